"""All-layer probe training in one pass vs one run per layer (the obvious alternative).

Times training steps of espnet_probe.probe.model.ProbeModel on real dumped features with a
trained ASR model: (a) one model probing all N layers (one frozen-encoder pass feeds N probes),
(b) N models probing one layer each, as N separate runs would. Reports the cost of (a) relative
to one single-layer run and to the N runs together. Run from the repository root after the
default recipe's stage 5:

  tools/venv/bin/python bench/bench_probe_layers.py --asr_exp exp/asr_vgg_blstm_small_baseline \\
      --feats dump/fbank/train/feats.scp --steps 6 --repeats 3
  # paper-scale encoder shape (untrained weights: the cost does not depend on them)
  tools/venv/bin/python bench/bench_probe_layers.py --asr_config conf/asr/vgg_blstm.yaml \
      --stats dump/fbank/train/cmvn.npz --hidden_size 512 --steps 2 --repeats 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import kaldiio
import numpy as np
import torch

from espnet_probe.layers import load_asr_model
from espnet_probe.probe.model import ProbeModel, probed_layers

from bench_common import untrained_asr


def batches(feats_scp: str, batch_frames: int, n_batches: int):
    mats = []
    for _, mat in kaldiio.load_scp_sequential(feats_scp):
        mats.append(np.array(mat, dtype=np.float32))
        if sum(len(m) for m in mats) > batch_frames * n_batches * 1.5:
            break
    mats.sort(key=len)
    out, current = [], []
    for m in mats:
        if current and len(m) * (len(current) + 1) > batch_frames:
            out.append(current)
            current = []
        current.append(m)
    out.append(current)
    result = []
    for group in out[:n_batches]:
        lens = torch.tensor([len(m) for m in group])
        x = torch.zeros(len(group), int(lens.max()), group[0].shape[1])
        for i, m in enumerate(group):
            x[i, : len(m)] = torch.from_numpy(m)
        result.append((x, lens))
    return result


def time_training(model: ProbeModel, data, repeats: int) -> float:
    """Median seconds for one pass of Adam steps over ``data``."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    x, lens = data[0]
    model(speech=x, speech_lengths=lens)[0].backward()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x, lens in data:
            opt.zero_grad()
            loss, _, _ = model(speech=x, speech_lengths=lens)
            loss.backward()
            opt.step()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--asr_exp", type=Path, help="a trained ASR experiment (config.yaml + checkpoint)")
    p.add_argument("--asr_config", type=Path, help="instead: build an untrained model of this shape")
    p.add_argument("--stats", default="dump/fbank/train/cmvn.npz", help="CMVN stats for --asr_config")
    p.add_argument("--feats", default="dump/fbank/train/feats.scp")
    p.add_argument("--steps", type=int, default=6, help="batches per timed pass")
    p.add_argument("--batch_frames", type=int, default=8000)
    p.add_argument("--hidden_size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    if (args.asr_exp is None) == (args.asr_config is None):
        p.error("give --asr_exp or --asr_config")
    if args.asr_exp is not None:
        checkpoint = next(args.asr_exp / n for n in ("valid.loss.ave.pth", "valid.loss.best.pth")
                          if (args.asr_exp / n).exists())
        asr = load_asr_model(args.asr_exp / "config.yaml", checkpoint)
        source = f"{args.asr_exp} ({checkpoint.name})"
    else:
        asr = untrained_asr(args.asr_config, args.stats)[0]
        source = f"{args.asr_config} (untrained, same shape)"
    data = batches(args.feats, args.batch_frames, args.steps)
    layers = probed_layers(asr)
    torch.manual_seed(0)
    all_layers = time_training(ProbeModel(asr, layers, hidden_size=args.hidden_size), data, args.repeats)
    single = {}
    for layer in layers:
        torch.manual_seed(0)
        single[layer.name] = time_training(ProbeModel(asr, [layer], hidden_size=args.hidden_size),
                                           data, args.repeats)
    frames = sum(int(lens.sum()) for _, lens in data)
    print(f"# probe training: all {len(layers)} layers in one pass vs one run per layer")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread, torch {torch.__version__}")
    print(f"ASR: {source}; {len(data)} batches, {frames} frames per pass; "
          f"probe hidden {args.hidden_size}; median of {args.repeats}")
    print("\n| probed | s per pass |\n|---|---|")
    print(f"| all {len(layers)} layers, one pass | {all_layers:.2f} |")
    for name, t in single.items():
        print(f"| {name} only | {t:.2f} |")
    mean_single = statistics.mean(single.values())
    print(f"\nall-layers pass / mean single-layer run: **{all_layers / mean_single:.2f}x**; "
          f"/ most expensive single layer ({max(single, key=single.get)}): "
          f"{all_layers / max(single.values()):.2f}x")
    print(f"{len(layers)} separate runs: {sum(single.values()):.2f} s, "
          f"i.e. **{sum(single.values()) / all_layers:.2f}x** the one-pass cost")


if __name__ == "__main__":
    main()
