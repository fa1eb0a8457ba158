"""Predicted log-mel of every probed layer for one feature set (ark/scp per layer).

  python -m espnet_probe.bin.probe_decode --probe_exp exp/probe_vgg_blstm_small_baseline \\
      --feats_dir dump/fbank/test_snr10 --out exp/probe_vgg_blstm_small_baseline/decode_test_snr10

Writes OUT/<layer>/mel.{ark,scp} and OUT/summary.json (per-layer L1 to the heard and, where the
set has target.scp, the clean log-mel). Re-running with the same model and set does nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from espnet_probe.asr.register import register_encoders


def best_probe_checkpoint(exp: Path) -> Path:
    for name in ("valid.loss.ave.pth", "valid.loss.best.pth", "latest.pth"):
        if (exp / name).exists():
            return exp / name
    raise FileNotFoundError(f"no probe checkpoint (valid.loss.ave/best.pth, latest.pth) in {exp}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--probe_exp", type=Path, required=True, help="probe_train output_dir")
    p.add_argument("--checkpoint", type=Path, help="default: the averaged/best valid checkpoint")
    p.add_argument("--feats_dir", type=Path, required=True, help="dump/fbank/<set>")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch_frames", type=int, default=20000)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from espnet_probe.probe.decode import ProbeDecodeError, decode_set
    from espnet_probe.tasks.probe import ProbeTask

    register_encoders()
    torch.set_num_threads(1)
    try:
        checkpoint = args.checkpoint or best_probe_checkpoint(args.probe_exp)
        model, _ = ProbeTask.build_model_from_file(args.probe_exp / "config.yaml", checkpoint, "cpu")
        summary = decode_set(model, args.feats_dir, args.out, args.batch_frames,
                             settings={"checkpoint": str(checkpoint),
                                       "mtime": Path(checkpoint).stat().st_mtime})
    except (ProbeDecodeError, FileNotFoundError, ValueError) as e:
        print(f"probe_decode: error: {e}", file=sys.stderr)
        return 1
    layers = summary["layers"]
    print(f"probe_decode {args.out}: {summary['utterances']} utts, "
          + ", ".join(f"{n} {v['l1_heard']:.3f}" for n, v in layers.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
