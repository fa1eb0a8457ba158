"""A static demo page of every probed layer's audio, to open from disk.

  python -m espnet_probe.bin.make_demo --exp_root exp --data data --out exp/demo \\
      [--utts_per_table 3] [--sets test test_snr0] [--exps probe_vgg_blstm_small_robust] \\
      [--seed 0] [--fbank_config conf/fbank.yaml]

Writes OUT/index.html, OUT/audio/... (the sample wavs, hard-linked when on the same filesystem)
and OUT/img/... (log-mel thumbnails): per probe experiment (model, training) and condition, a
table with a row per layer (the unprocessed audio and the oracle Griffin-Lim first) and a column
per sample utterance. OUT is replaced whole only when everything succeeded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from espnet_probe.audio.io import AudioError
from espnet_probe.report.demo import DemoError, build_demo
from espnet_probe.scoring.layer_scores import LayerScoringError
from espnet_probe.utils.kaldi_dir import DataDirError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--exp_root", type=Path, default=Path("exp"),
                   help="holds the run's plan (experiments.yaml, espnet_probe/experiments.py)")
    p.add_argument("--data", type=Path, default=Path("data"), help="holds <set>/wav.scp, utt2spk")
    p.add_argument("--out", type=Path, default=Path("exp/demo"))
    p.add_argument("--utts_per_table", type=int, default=3)
    p.add_argument("--sets", nargs="+", help="conditions to show (default: every decoded set)")
    p.add_argument("--exps", nargs="+",
                   help="probe experiment dirs, under --exp_root or paths (default: every "
                        "probe experiment of the plan)")
    p.add_argument("--seed", type=int, default=0, help="picks the sample utterances")
    p.add_argument("--fbank_config", type=Path, default=Path("conf/fbank.yaml"),
                   help="log-mel of the original audio's images")
    args = p.parse_args(argv)
    if args.utts_per_table < 1:
        p.error(f"--utts_per_table must be >= 1, got {args.utts_per_table}")
    start = time.time()
    try:
        summary = build_demo(args.exp_root, args.data, args.out, args.utts_per_table, args.sets,
                             args.exps, args.seed, args.fbank_config)
    except (DemoError, LayerScoringError, DataDirError, AudioError, FileNotFoundError,
            ValueError) as e:
        print(f"make_demo: error: {e}", file=sys.stderr)
        return 1
    print(f"make_demo {args.out / 'index.html'}: {summary['tables']} tables, {summary['cells']} "
          f"audio cells, {len(summary['exps'])} experiments x {len(summary['sets'])} sets, "
          f"{time.time() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
