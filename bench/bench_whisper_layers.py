"""What a Whisper probe epoch costs, and the options against each other.

  tools/venv/bin/python bench/bench_whisper_layers.py [--n_utts 24] [--epochs 3] [--threads 1]

Real LibriSpeech utterances (../shared/data), Whisper tiny.en from its wheel, the project's
probes on every layer (conf/probe/probe_small.yaml's sizes), as ESPnet's trainer would run them
(batches of --batch utterances), for --epochs epochs with each option:

  recompute      every epoch runs the encoder again, one utterance per forward (window batch 1)
  batched        every epoch runs the encoder again, the batch's windows in one forward
  cache          batched, and the layers kept in float16 after the first epoch
                 (ProbeModel.cache_layers, what the probe trainer uses)

Prints a markdown table: seconds per epoch (first and later), the split between the encoder and
the probes, speed-up of the later epochs over `recompute`, the cache's memory per hour of audio,
and the float16 rounding of the cached layers (max relative error).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--librispeech", type=Path,
                   default=REPO.parent / "shared" / "data" / "LibriSpeech" / "train-clean-5")
    p.add_argument("--n_utts", type=int, default=24)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="utterances per step")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def utterances(root: Path, n: int):
    flacs = sorted(root.rglob("*.flac"))[:: max(1, len(sorted(root.rglob("*.flac"))) // n)][:n]
    return [sf.read(f, dtype="float32")[0] for f in flacs]


def batches(waves, size):
    for first in range(0, len(waves), size):
        part = waves[first:first + size]
        lengths = torch.tensor([len(w) for w in part])
        speech = torch.zeros(len(part), int(lengths.max()))
        for b, w in enumerate(part):
            speech[b, : len(w)] = torch.from_numpy(w)
        yield speech, lengths


def run(option: str, asr, waves, epochs: int, batch: int) -> dict:
    from espnet_probe.audio.features import FbankConfig, LogMelExtractor
    from espnet_probe.layers import extract_layers
    from espnet_probe.probe.model import ProbeModel, probed_layers

    asr = copy.deepcopy(asr)
    asr.window_batch = 1 if option == "recompute" else 4
    conf = yaml.safe_load((REPO / "conf" / "probe" / "probe_small.yaml").read_text())
    probe_conf = {k: v for k, v in (conf.get("probe_conf") or {}).items() if k != "mix_batches"}
    model = ProbeModel(asr, probed_layers(asr, "all", 0.01), n_mels=80, **probe_conf)
    if option == "cache":
        model.cache_layers(8 * 2**30)
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    extractor = LogMelExtractor(FbankConfig())
    mels = [torch.from_numpy(extractor(w)[0]) for w in waves]
    epochs_s = []
    for _ in range(epochs):
        start = time.perf_counter()
        for k, (speech, lengths) in enumerate(batches(waves, batch)):
            part = mels[k * batch:(k + 1) * batch]
            mel = torch.nn.utils.rnn.pad_sequence(part, batch_first=True)
            loss, _, _ = model(speech=speech, speech_lengths=lengths, mel=mel,
                               mel_lengths=torch.tensor([len(m) for m in part]))
            optim.zero_grad()
            loss.backward()
            optim.step()
        epochs_s.append(time.perf_counter() - start)
    out = {"option": option, "first": epochs_s[0], "later": float(np.mean(epochs_s[1:]))}
    if option != "cache":  # the encoder's share: one more pass of it alone
        start = time.perf_counter()
        for speech, lengths in batches(waves, batch):
            model.hidden_states(speech, lengths)
        out["encoder"] = time.perf_counter() - start
    if option == "cache":
        hours = sum(len(w) for w in waves) / 16000 / 3600
        out["gb_per_hour"] = model._cache_bytes / 2**30 / hours
        speech, lengths = next(batches(waves, batch))
        exact = {s.layer.name: s.hidden for s in extract_layers(asr, speech, lengths)}
        rounded = model.hidden_states(speech, lengths)
        out["fp16_rel_err"] = max(float((rounded[n].hidden - e).abs().max() / e.abs().max())
                                  for n, e in exact.items())
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from espnet_probe.asr.whisper import load_whisper

    asr = load_whisper("whisper:tiny.en")
    waves = utterances(args.librispeech, args.n_utts)
    audio_s = sum(len(w) for w in waves) / 16000
    rows = [run(o, asr, waves, args.epochs, args.batch) for o in ("recompute", "batched", "cache")]
    base = rows[0]["later"]
    print(f"# Whisper tiny.en probe epochs: {args.n_utts} utterances ({audio_s:.0f} s of audio), "
          f"batches of {args.batch}, {args.epochs} epochs, {args.threads} thread(s)\n")
    print(f"{datetime.date.today()}, {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}; `tools/venv/bin/python bench/bench_whisper_layers.py "
          f"--n_utts {args.n_utts} --epochs {args.epochs} --batch {args.batch} --threads {args.threads}`\n")
    print("| option | first epoch (s) | later epochs (s) | encoder's share of an epoch | later epochs vs recompute |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        share = f"{r['encoder'] / r['later']:.0%}" if "encoder" in r else "cached"
        print(f"| {r['option']} | {r['first']:.1f} | {r['later']:.1f} | {share} | {base / r['later']:.2f}x |")
    cache = rows[-1]
    print(f"\nCache: {cache['gb_per_hour']:.2f} GB per hour of audio (float16, every layer, the "
          f"utterance's frames only); float16 rounding: max relative error "
          f"{cache['fp16_rel_err']:.1e} of a layer's largest value.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
