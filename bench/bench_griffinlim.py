"""Griffin-Lim speed and quality: our batched torch implementation vs librosa.griffinlim.

  tools/venv/bin/python bench/bench_griffinlim.py [--threads 2] [--n_iter 32] [--repeats 3]

Real LibriSpeech utterances (../shared/data) -> log-mel (conf/fbank.yaml) -> pseudo-inverse
magnitude; every method then gets the same magnitudes, iteration count, STFT settings and
exact output lengths. Prints a markdown table: wall time (best of --repeats, interleaved so
machine load hits every method alike), CPU time, speed-up over librosa, and STOI of each
method's audio against the original recording.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--librispeech", type=Path,
                   default=REPO.parent / "shared" / "data" / "LibriSpeech" / "train-clean-5")
    p.add_argument("--fbank_config", type=Path, default=REPO / "conf" / "fbank.yaml")
    p.add_argument("--vocoder_config", type=Path, default=REPO / "conf" / "vocoder.yaml")
    p.add_argument("--n_utts", type=int, default=10, help="one utterance from each of N speakers")
    p.add_argument("--min_dur", type=float, default=5.0, help="shortest utterance picked (s)")
    p.add_argument("--max_dur", type=float, default=12.0, help="longest utterance picked (s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n_iter", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args(argv)


ARGS = parse_args()
# Thread pools read these at import time: set them before numpy / torch load.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import librosa  # noqa: E402  (the baseline only; the vocoder itself does not use it)
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from pystoi import stoi  # noqa: E402

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from bench_common import cpu_model, pick_utterances  # noqa: E402
from espnet_probe.audio.features import FbankConfig, LogMelExtractor  # noqa: E402
from espnet_probe.audio.vocoder import (VocoderConfig, griffin_lim, length_batches,  # noqa: E402
                                        mel_to_magnitude, parallel_map)


def ours_batched(mags, lengths, cfg, vc, n_iter, workers, one_batch=False):
    """As the vocode tool runs: length-sorted batches (conf/vocoder.yaml limits) on workers;
    one_batch puts every utterance in a single padded batch instead."""
    frames = [m.shape[0] for m in mags]
    batches = length_batches(list(range(len(mags))), frames, vc.batch_frames, vc.max_batch)
    if one_batch:
        batches = [sorted(range(len(mags)), key=lambda i: -frames[i])]

    def run(batch):
        padded = torch.zeros(len(batch), max(frames[i] for i in batch), mags[0].shape[1])
        for row, i in enumerate(batch):
            padded[row, :frames[i]] = mags[i]
        wav = griffin_lim(padded, cfg, n_iter=n_iter, momentum=vc.momentum,
                          lengths=[lengths[i] for i in batch], seed=vc.seed, init=vc.init_phase)
        return [wav[row, :lengths[i]].numpy() for row, i in enumerate(batch)]

    out = [None] * len(mags)
    for batch, wavs in zip(batches, parallel_map(run, batches, workers)):
        for i, wav in zip(batch, wavs):
            out[i] = wav
    return out


def ours_single(mags, lengths, cfg, vc, n_iter, workers):
    def run(i):
        return griffin_lim(mags[i], cfg, n_iter=n_iter, momentum=vc.momentum, lengths=[lengths[i]],
                           seed=vc.seed, init=vc.init_phase).numpy()
    return list(parallel_map(run, range(len(mags)), workers))


def librosa_gl(mags, lengths, cfg, vc, n_iter, workers):
    # librosa's defaults (momentum 0.99, random init) with the front end's STFT; its stft pads
    # with zeros by default, so reflect padding is asked for to invert the same framing.
    def run(i):
        return librosa.griffinlim(mags[i].numpy().T, n_iter=n_iter, hop_length=cfg.hop_length,
                                  win_length=cfg.win_length, n_fft=cfg.n_fft, window="hann",
                                  center=True, length=lengths[i], pad_mode="reflect",
                                  random_state=vc.seed)
    if workers <= 1:
        return [run(i) for i in range(len(mags))]
    with ThreadPoolExecutor(workers) as pool:  # numpy releases the GIL in FFTs and big ufuncs
        return list(pool.map(run, range(len(mags))))


def main() -> int:
    torch.set_num_threads(ARGS.threads)
    cfg = FbankConfig.from_yaml(ARGS.fbank_config)
    vc = VocoderConfig.from_yaml(ARGS.vocoder_config)
    files = pick_utterances(ARGS.librispeech, ARGS.n_utts, ARGS.min_dur, ARGS.max_dur)
    wavs = [sf.read(f, dtype="float32")[0] for f in files]
    lengths = [w.size for w in wavs]
    total = sum(lengths) / cfg.sample_rate
    ext = LogMelExtractor(cfg)
    mags = [mel_to_magnitude(ext(w)[1], cfg) for w in wavs]

    t = ARGS.threads
    # (function, parallel workers, torch intra-op threads); every row uses at most t cores
    one_batch = functools.partial(ours_batched, one_batch=True)
    methods = {
        f"ours, batched, {t} workers x 1 thread (vocode tool)": (ours_batched, t, 1),
        f"ours, one at a time, {t} workers x 1 thread": (ours_single, t, 1),
        f"ours, one at a time, 1 worker x {t} threads": (ours_single, 1, t),
        f"ours, all in one batch, 1 worker x {t} threads": (one_batch, 1, t),
        "librosa.griffinlim, one at a time": (librosa_gl, 1, t),
        f"librosa.griffinlim, {t} workers": (librosa_gl, t, t),
    }
    for fn, workers, threads in methods.values():  # warm up thread pools and FFT plans
        torch.set_num_threads(threads)
        fn(mags[:2], lengths[:2], cfg, vc, 2, workers)
    load_before = os.getloadavg()
    wall = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    outputs = {}
    for _ in range(ARGS.repeats):
        for name, (fn, workers, threads) in methods.items():
            torch.set_num_threads(threads)
            t0, c0 = time.perf_counter(), time.process_time()
            outputs[name] = fn(mags, lengths, cfg, vc, ARGS.n_iter, workers)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    load_after = os.getloadavg()

    ref = "librosa.griffinlim, one at a time"
    ref_par = f"librosa.griffinlim, {t} workers"
    scores = {name: [stoi(w, o, cfg.sample_rate, extended=False) for w, o in zip(wavs, outs)]
              for name, outs in outputs.items()}
    for name, outs in outputs.items():
        assert all(o.shape == w.shape for o, w in zip(outs, wavs)), name

    print(f"# Griffin-Lim benchmark, {datetime.date.today().isoformat()}")
    print(f"{len(files)} LibriSpeech train-clean-5 utterances ({total:.1f} s of audio, "
          f"{min(lengths) / cfg.sample_rate:.1f}-{max(lengths) / cfg.sample_rate:.1f} s each), "
          f"n_iter={ARGS.n_iter}, momentum={vc.momentum}, random init (seed {vc.seed}), "
          f"n_fft={cfg.n_fft} win={cfg.win_length} hop={cfg.hop_length} hann, "
          f"{ARGS.threads} threads, best of {ARGS.repeats} interleaved runs.")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, librosa {librosa.__version__}, numpy {np.__version__}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.\n")
    print("| method | wall (s) | CPU (s) | x real time | speed-up vs librosa one at a time | "
          f"vs librosa {t} workers | STOI mean | STOI min | STOI - librosa |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in methods:
        best = min(wall[name])
        print(f"| {name} | {best:.3f} | {min(cpu[name]):.3f} | {total / best:.0f} | "
              f"{min(wall[ref]) / best:.2f} | {min(wall[ref_par]) / best:.2f} | "
              f"{np.mean(scores[name]):.4f} | {np.min(scores[name]):.4f} | "
              f"{np.mean(scores[name]) - np.mean(scores[ref]):+.4f} |")
    frames = [m.shape[0] for m in mags]
    sizes = [len(b) for b in length_batches(frames, frames, vc.batch_frames, vc.max_batch)]
    print(f"\nBatches of the vocode tool (batch_frames={vc.batch_frames}, "
          f"max_batch={vc.max_batch}): sizes {sizes}.")
    print("Wall time of every run (s): " + "; ".join(
        f"{name}: " + "/".join(f"{x:.2f}" for x in wall[name]) for name in methods) + ".")
    print("\nUtterances: " + ", ".join(f.stem for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
