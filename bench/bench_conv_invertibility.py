"""How much of the input a frame-wise probe recovers from one random convolution + ReLU.

The probe-strength check (issue 14) expects a randomly initialised encoder's first conv layer to
be recovered almost as well as the input. This bench separates the two possible reasons it is
not: the probe (its training) or the layer (what C random ReLU channels keep). It needs no ASR
model: it reads real features of a recipe (dump/fbank/<set>/feats.scp), normalises them like
global_mvn, and builds the layer itself: Conv2d(3 -> C, 3x3, padding 1) + ReLU over the
static | delta | accel planes, as the VGG encoders' first layer (conf/asr: vgg_blstm_small has
C=16, the paper's VGG C=64). The same probe as stage 7 (espnet_probe.probe.model.LayerProbe:
Linear up-projection, 4 Highway layers, output to 80 mels) is trained on the layer's frames with
Adam + exponential decay, on batches of 600 frames drawn either from the whole training set
("iid"), from one utterance at a time ("utterance", what a one-utterance ESPnet batch gives), or
from one utterance at a time and dealt out over N steps as stage 7 does with
``probe_conf: mix_batches: N`` ("mixedN", espnet_probe.probe.model.FrameDealer).

  tools/venv/bin/python bench/bench_conv_invertibility.py --recipe_dir egs/librispeech_probe \\
      --out bench/results/conv_invertibility

Reports the validation L1 (log-mel) at quarters of training and the CPU time of each run.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import espnet_probe  # noqa: E402,F401  (offline import hook first)
from bench.bench_common import cpu_model  # noqa: E402
from espnet_probe.probe.model import FrameDealer, LayerProbe, SampledFrames  # noqa: E402

N_MELS = 80


def load_features(scp: Path, n: int, seed: int) -> list[np.ndarray]:
    items = [line.split(maxsplit=1) for line in scp.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(items)
    return [np.array(kaldiio.load_mat(path.strip()), dtype=np.float32) for _, path in items[:n]]


def layer_frames(feats: list[np.ndarray], mean: np.ndarray, std: np.ndarray,
                 conv: torch.nn.Module | None) -> list[torch.Tensor]:
    """Per utterance (T, D): the normalised input, or its random conv + ReLU, flattened."""
    out = []
    with torch.no_grad():
        for x in feats:
            h = torch.from_numpy((x - mean) / std)
            if conv is not None:
                t = h.size(0)
                planes = h.reshape(1, t, 3, N_MELS).transpose(1, 2)      # (1, 3, T, F)
                h = torch.relu(conv(planes))[0].permute(1, 0, 2).reshape(t, -1)
            out.append(h)
    return out


def train_probe(x_train: list[torch.Tensor], y_train: list[torch.Tensor], x_valid: torch.Tensor,
                y_valid: torch.Tensor, *, hidden: int, steps: int, lr: float, frames: int,
                batching: str, seed: int) -> tuple[list[float], float]:
    torch.manual_seed(seed)
    probe = LayerProbe(x_train[0].size(1), 1.0, -0.5, hidden)
    net = torch.nn.Sequential(probe.upsample, probe.highway, probe.output)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    # x0.7 every sixth of the run: the schedule of conf/probe/probe_small.yaml over 6 epochs
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.7 ** (6 / steps))
    all_x, all_y = torch.cat(x_train), torch.cat(y_train)
    rng = torch.Generator().manual_seed(seed)
    dealer = FrameDealer(int(batching.removeprefix("mixed"))) if batching.startswith("mixed") else None
    curve, start = [], time.process_time()
    for step in range(1, steps + 1):
        if batching == "iid":
            idx = torch.randint(0, all_x.size(0), (frames,), generator=rng)
            x, y = all_x[idx], all_y[idx]
        else:
            u = int(torch.randint(0, len(x_train), (1,), generator=rng))
            idx = torch.randint(0, x_train[u].size(0), (frames,), generator=rng)
            x, y = x_train[u][idx], y_train[u][idx]
            if dealer is not None:
                none = torch.zeros(frames)
                mixed, y = dealer.deal({"x": SampledFrames(x, none.long(), None, None, none)}, y)
                x = mixed["x"].lo
        net.train()
        loss = (net(x) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % (steps // 4) == 0:
            net.eval()
            with torch.no_grad():
                curve.append(float((net(x_valid) - y_valid).abs().mean()))
    return curve, time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe_dir", type=Path, required=True)
    p.add_argument("--train_set", default="train_robust")
    p.add_argument("--valid_set", default="dev")
    p.add_argument("--train_utts", type=int, default=50)
    p.add_argument("--valid_utts", type=int, default=12)
    p.add_argument("--layers", nargs="+", default=["input", "conv16", "conv32", "conv64"],
                   help="input, or convC: a random C-channel 3x3 convolution + ReLU")
    p.add_argument("--batching", nargs="+", default=["iid", "utterance", "mixed8"],
                   help="iid, utterance, or mixedN (one utterance per step, dealt over N steps)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    command = "tools/venv/bin/python " + " ".join(sys.argv)
    args.out = args.out.resolve()
    os.chdir(args.recipe_dir)  # the scp files' ark paths are relative to it
    fbank = Path("dump/fbank")
    train = load_features(fbank / args.train_set / "feats.scp", args.train_utts, args.seed)
    valid = load_features(fbank / args.valid_set / "feats.scp", args.valid_utts, args.seed)
    stacked = np.concatenate(train)
    mean, std = stacked.mean(0), stacked.std(0) + 1e-5
    y_train = [torch.from_numpy(x[:, :N_MELS]) for x in train]
    y_valid = torch.from_numpy(np.concatenate(valid)[:, :N_MELS])
    constant = float((y_valid - torch.cat(y_train).median(0).values).abs().mean())

    rows = []
    for layer in args.layers:
        conv = None
        if layer != "input":
            torch.manual_seed(args.seed)  # PyTorch's default init, as a fresh encoder has
            conv = torch.nn.Conv2d(3, int(layer.removeprefix("conv")), 3, padding=1)
        x_train = layer_frames(train, mean, std, conv)
        x_valid = torch.cat(layer_frames(valid, mean, std, conv))
        zeros = float((torch.cat(x_train) == 0).float().mean())
        for batching in args.batching:
            curve, cpu = train_probe(x_train, y_train, x_valid, y_valid, hidden=args.hidden,
                                     steps=args.steps, lr=args.lr, frames=args.frames,
                                     batching=batching, seed=args.seed)
            rows.append({"layer": layer, "dims": x_valid.size(1), "zero_fraction": zeros,
                         "batching": batching, "curve": curve, "cpu_s": cpu})
            print(f"{layer} ({x_valid.size(1)} dims, {zeros:.0%} zeros) {batching}: valid L1 "
                  + " ".join(f"{v:.3f}" for v in curve) + f"  {cpu:.0f} CPU s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    quarters = [f"{q * args.steps // 4}" for q in range(1, 5)]
    with open(args.out / "conv_invertibility.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "dims", "zero_fraction", "batching", *[f"l1_step{q}" for q in quarters],
                    "cpu_s"])
        for r in rows:
            w.writerow([r["layer"], r["dims"], f"{r['zero_fraction']:.3f}", r["batching"],
                        *[f"{v:.4f}" for v in r["curve"]], f"{r['cpu_s']:.0f}"])
    lines = [
        "# Frame-wise probe on one random convolution + ReLU (bench/bench_conv_invertibility.py)",
        "",
        f"Command: `{command}` ({args.train_utts} {args.train_set} / {args.valid_utts} {args.valid_set} "
        f"utterances, {args.steps} steps of {args.frames} frames, probe {args.hidden} wide, "
        f"lr {args.lr}).",
        "",
        f"Machine: {cpu_model()}, one thread per run. Validation L1 of the best constant "
        f"(median) predictor: **{constant:.3f}**.",
        "",
        "| layer | dims | zeros | batches | " + " | ".join(f"L1 @ {q}" for q in quarters)
        + " | CPU s |",
        "|---|---:|---:|---|" + "---:|" * (len(quarters) + 1),
    ]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['dims']} | {r['zero_fraction']:.0%} | {r['batching']} | "
                     + " | ".join(f"{v:.3f}" for v in r["curve"]) + f" | {r['cpu_s']:.0f} |")
    (args.out / "conv_invertibility.md").write_text("\n".join(lines) + "\n")
    print(f"bench_conv_invertibility: {args.out / 'conv_invertibility.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
