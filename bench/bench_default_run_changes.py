"""Before / after of each hot-spot change made for the default run's budget, in one run.

  tools/venv/bin/python bench/bench_default_run_changes.py [--repeats 5] [--out bench/RESULTS_default_run_changes.md]

Each row times the old and the new way of the same work on this machine, one thread, in the
same process (synthetic inputs of the real shapes; no recipe needed):
  1. VGG-BLSTM forward + backward, 16 utterances x 250 frames: conv weights in torch's default
     layout vs channels-last (espnet_probe/asr/vgg_blstm.py);
  2. one probe update over the 12 layers of vgg_blstm_small (4 utterances x 250 frames):
     256 wide, loss on 600 frames, Adam per tensor, every slot projected (the probe config
     before) vs 128 wide, 200 frames, fused Adam, only the sampled slot projected (now);
  3. speaker-ID pooling of every layer over 96 utterances: 20,000-frame vs 1,000-frame batches;
  4. `bring_asr --checkpoint_of` (called for every probe experiment in stage 7): with the encoders
     imported by espnet_probe.asr's package init (torch) vs without;
  5. importing ESPnet's ASR task in a fresh interpreter (every decoding, probe and scoring job
     does): with typeguard's import-time instrumentation (PROBE_TYPECHECK=1) vs without;
  6. STOI + ESTOI of 24 pairs of 3 s signals (stage 11 scores every vocoded utterance so):
     two pystoi.stoi calls vs one shared pass (espnet_probe/metrics/quality.py).
The medians and ratios go to stdout and to --out as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import REPO, cpu_model  # noqa: E402

VGG = dict(input_size=240, in_channels=3, conv_channels=[16, 16, 32, 32], num_layers=5,
           hidden_size=128, projection_size=128, subsample=[1] * 5, dropout=0.1)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN primitive cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_layout(repeats: int) -> tuple[float, float]:
    import torch

    from espnet_probe.asr.vgg_blstm import VGGBLSTMEncoder

    torch.manual_seed(0)
    new = VGGBLSTMEncoder(**VGG)
    old = VGGBLSTMEncoder(**VGG)
    old.load_state_dict(new.state_dict())
    for conv in old.convs:  # the layout before the change: contiguous (NCHW) weights
        conv.weight.data = conv.weight.data.contiguous()
    x, lengths = torch.randn(16, 250, 240), torch.full((16,), 250)

    def step(encoder):
        def run():
            out, _, _ = encoder(x, lengths)
            out.sum().backward()
        return run
    return median_time(step(old), repeats), median_time(step(new), repeats)


def probe_update(repeats: int) -> tuple[float, float]:
    import torch

    from espnet_probe.asr.vgg_blstm import VGGBLSTMEncoder
    from espnet_probe.probe.model import LayerProbe

    torch.manual_seed(0)
    encoder = VGGBLSTMEncoder(**VGG).eval()
    x, lengths = torch.randn(4, 250, 240), torch.full((4,), 250)
    with torch.no_grad():
        layers = encoder.forward_layers(x, lengths)
    target = torch.randn(4, 250, 80)

    def setup(hidden: int, frames: int, fused: bool, all_slots: bool):
        probes = [LayerProbe(out.size(-1), 250 / out.size(1), -0.5, hidden) for _, out, *_ in layers]
        params = [p for probe in probes for p in probe.parameters()]
        optim = torch.optim.Adam(params, lr=1e-3, fused=fused, foreach=False if not fused else None)
        b, t = torch.randint(0, 4, (frames,)), torch.randint(0, 250, (frames,))

        def run():
            with torch.no_grad():  # the frozen encoder's pass, as in training
                outs = encoder.forward_layers(x, lengths)
            loss = 0
            for probe, (_, out, out_lengths, *_) in zip(probes, outs):
                if all_slots:  # before: every slot's projection, then the sampled one picked
                    pred = probe(out, 250, out_lengths)[b, t]
                else:
                    pred = probe.forward_at(out, out_lengths, b, t)
                loss = loss + (pred - target[b, t]).abs().mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
        return run
    return (median_time(setup(256, 600, False, True), repeats),
            median_time(setup(128, 200, True, False), repeats))


def pooling_batches(repeats: int, tmp: Path) -> tuple[float, float]:
    import kaldiio
    import numpy as np
    import torch

    from espnet_probe.asr.vgg_blstm import VGGBLSTMEncoder
    from espnet_probe.probe.speaker_id import pooled_layers

    class Model(torch.nn.Module):  # the parts of an ESPnet ASR model extract_layers reads
        def __init__(self):
            super().__init__()
            self.frontend, self.normalize = None, None
            self.encoder = VGGBLSTMEncoder(**VGG).eval()

    torch.manual_seed(0)
    model = Model().eval()
    rng = np.random.default_rng(0)
    scp = tmp / "feats.scp"
    with kaldiio.WriteHelper(f"ark,scp:{tmp / 'feats.ark'},{scp}") as writer:
        for i in range(96):
            writer(f"u{i:03d}", rng.standard_normal((int(rng.integers(150, 400)), 240)).astype("float32"))
    utts = [f"u{i:03d}" for i in range(96)]
    return tuple(median_time(lambda f=frames: pooled_layers(model, scp, utts, f), max(1, repeats // 2))
                 for frames in (20000, 1000))


def import_cost(repeats: int) -> tuple[float, float]:
    exp = Path(tempfile.mkdtemp())
    (exp / "valid.loss.ave.pth").touch()
    cmd = [sys.executable, "-m", "espnet_probe.bin.bring_asr", "--checkpoint_of", str(exp)]
    old = [sys.executable, "-c", "import espnet_probe.asr.vgg_blstm, espnet_probe.asr.register; "
           "import runpy, sys; sys.argv = ['bring_asr', '--checkpoint_of', sys.argv[1]]; "
           "runpy.run_module('espnet_probe.bin.bring_asr', run_name='__main__')", str(exp)]
    run = lambda c: subprocess.run(c, cwd=REPO, capture_output=True, check=True)  # noqa: E731
    return (median_time(lambda: run(old), repeats), median_time(lambda: run(cmd), repeats))


def espnet_import(repeats: int) -> tuple[float, float]:
    code = "import espnet_probe.utils.typecheck, espnet2.tasks.asr"  # as a tool does
    run = lambda flag: subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,  # noqa: E731
                                      check=True, env={**os.environ, "PROBE_TYPECHECK": flag})
    return median_time(lambda: run("1"), repeats), median_time(lambda: run("0"), repeats)


def intelligibility(repeats: int) -> tuple[float, float]:
    import numpy as np
    from pystoi import stoi

    from espnet_probe.metrics.quality import _intelligibility

    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    pairs = []
    for _ in range(24):  # speech-like: noise under a 4 Hz syllable envelope, plus a degradation
        ref = rng.standard_normal(t.size) * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)) ** 2
        pairs.append((ref, ref + 0.3 * rng.standard_normal(t.size)))
    old = lambda: [(stoi(r, e, 16000), stoi(r, e, 16000, extended=True)) for r, e in pairs]  # noqa: E731
    new = lambda: [_intelligibility(r, e, (False, True)) for r, e in pairs]  # noqa: E731
    return median_time(old, repeats), median_time(new, repeats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "RESULTS_default_run_changes.md")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for what, fn in [
            ("VGG-BLSTM forward + backward, 16 x 250 frames: NCHW vs channels-last conv weights", conv_layout),
            ("probe update, 12 layers: 256 wide / 600 frames / Adam / all slots vs 128 / 200 / fused / sampled slot", probe_update),
            ("speaker-ID pooling, 96 utts x 12 layers: 20,000- vs 1,000-frame batches", lambda r: pooling_batches(r, Path(tmp))),
            ("bring_asr --checkpoint_of: encoders (torch) imported vs not", import_cost),
            ("import espnet2.tasks.asr: typeguard instrumentation vs none", espnet_import),
            ("STOI + ESTOI, 24 x 3 s: two pystoi.stoi calls vs one shared pass", intelligibility),
        ]:
            before, after = fn(args.repeats)
            rows.append((what, before, after))
            print(f"{what}: {before:.3f} s -> {after:.3f} s ({before / after:.2f}x)", flush=True)
    lines = [f"# Default-run hot spots, before vs after (`bench/bench_default_run_changes.py --repeats {args.repeats}`)",
             "", f"{cpu_model()}, 1 thread, load average {load:.1f} at the start, "
             f"{time.strftime('%Y-%m-%d %H:%M')}; medians of {args.repeats} runs.", "",
             "| work | before (s) | after (s) | speed-up |", "|---|---:|---:|---:|"]
    lines += [f"| {w} | {b:.3f} | {a:.3f} | {b / a:.2f}x |" for w, b, a in rows]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
