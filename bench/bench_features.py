"""Feature extraction speed: our log-mel + deltas vs torchaudio's Kaldi fbank and librosa.

  tools/venv/bin/python bench/bench_features.py [--n_utts 20] [--repeats 5]

Real LibriSpeech utterances (../shared/data). Every method makes the same thing the ASR stage
consumes: 80 log-mel bands every 10 ms from 25 ms windows, plus deltas and accelerations
(240 dims). One thread each, utterances one at a time (as make_features runs, one process per
--nj job), best of --repeats interleaved runs so machine load hits every method alike. Prints a
Markdown table: wall time, x real time, ratio to ours, and how close each method's static
log-mel is to ours (the front ends differ in details: Kaldi's povey window, dithering off,
power vs magnitude; the number shows they compute comparable features, not identical ones).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"  # thread pools read these at import time

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import torchaudio.compliance.kaldi as kaldi  # noqa: E402
import torchaudio.functional as taf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from bench_common import LIBRISPEECH, cpu_model, pick_utterances  # noqa: E402
from espnet_probe.audio.features import FbankConfig, LogMelExtractor  # noqa: E402


def ours(wav: np.ndarray, cfg: FbankConfig, ext: LogMelExtractor) -> np.ndarray:
    return ext(wav)[0]


def torchaudio_kaldi(wav: np.ndarray, cfg: FbankConfig, ext: LogMelExtractor) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy(wav).unsqueeze(0) * 32768  # Kaldi works on 16-bit sample values
        fb = kaldi.fbank(x, num_mel_bins=cfg.n_mels, frame_length=cfg.win_length * 1000 / cfg.sample_rate,
                         frame_shift=cfg.hop_length * 1000 / cfg.sample_rate, dither=0.0,
                         low_freq=cfg.fmin, high_freq=cfg.fmax, sample_frequency=cfg.sample_rate,
                         energy_floor=0.0)
        d1 = taf.compute_deltas(fb.T, win_length=2 * cfg.delta_window + 1)
        d2 = taf.compute_deltas(d1, win_length=2 * cfg.delta_window + 1)
        return torch.cat([fb.T, d1, d2]).T.numpy()


def librosa_mel(wav: np.ndarray, cfg: FbankConfig, ext: LogMelExtractor) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=wav, sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                         hop_length=cfg.hop_length, win_length=cfg.win_length,
                                         window="hann", center=True, pad_mode="reflect", power=1.0,
                                         n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, htk=True,
                                         norm=None)
    lm = np.log(np.maximum(mel, cfg.log_floor))
    width = 2 * cfg.delta_window + 1
    d1 = librosa.feature.delta(lm, width=width, mode="nearest")
    d2 = librosa.feature.delta(lm, width=width, order=2, mode="nearest")
    return np.concatenate([lm, d1, d2]).T


METHODS = {
    "ours (LogMelExtractor, torch)": ours,
    "torchaudio.compliance.kaldi.fbank + compute_deltas": torchaudio_kaldi,
    "librosa melspectrogram + delta": librosa_mel,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--librispeech", type=Path, default=LIBRISPEECH)
    p.add_argument("--fbank_config", type=Path, default=REPO / "conf" / "fbank.yaml")
    p.add_argument("--n_utts", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = FbankConfig.from_yaml(args.fbank_config)
    ext = LogMelExtractor(cfg)
    files = pick_utterances(args.librispeech, args.n_utts, 2.0, 20.0)
    wavs = [sf.read(f, dtype="float32")[0] for f in files]
    total = sum(w.size for w in wavs) / cfg.sample_rate

    for fn in METHODS.values():  # warm-up: FFT plans, lazy imports
        fn(wavs[0], cfg, ext)
    load_before = os.getloadavg()[0]
    wall = {name: [] for name in METHODS}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in METHODS.items():
            t0 = time.perf_counter()
            outputs[name] = [fn(w, cfg, ext) for w in wavs]
            wall[name].append(time.perf_counter() - t0)
    load_after = os.getloadavg()[0]

    ref = next(iter(METHODS))
    print(f"# Feature extraction benchmark, {datetime.date.today().isoformat()}")
    print(f"{len(files)} LibriSpeech train-clean-5 utterances, {total:.1f} s of audio; 80 log-mel "
          f"+ deltas + accelerations (240 dims); 1 thread; best of {args.repeats} interleaved runs.")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"librosa {librosa.__version__}; load average {load_before:.2f} before, "
          f"{load_after:.2f} after.\n")
    print("| method | wall (s) | x real time | time / ours | frames vs ours | "
          "corr. of static log-mel with ours |")
    print("|---|---:|---:|---:|---|---:|")
    for name in METHODS:
        best = min(wall[name])
        frames = [o.shape[0] - r.shape[0] for o, r in zip(outputs[name], outputs[ref])]
        corr = np.mean([np.corrcoef(o[:n, :cfg.n_mels].ravel(), r[:n, :cfg.n_mels].ravel())[0, 1]
                        for o, r in zip(outputs[name], outputs[ref])
                        for n in [min(o.shape[0], r.shape[0])]])
        print(f"| {name} | {best:.3f} | {total / best:.0f} | {best / min(wall[ref]):.2f} | "
              f"{min(frames):+d}..{max(frames):+d} | {corr:.3f} |")
    print("\nWall time of every run (s): " + "; ".join(
        f"{name}: " + "/".join(f"{x:.3f}" for x in wall[name]) for name in METHODS) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
