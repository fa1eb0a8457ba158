"""Predicted log-mel of every probed layer for one feature set (ark/scp per layer).

  python -m espnet_probe.bin.probe_decode --probe_exp exp/probe_vgg_blstm_small_baseline \\
      --feats_dir dump/fbank/test dump/fbank/test_snr10
  python -m espnet_probe.bin.probe_decode --oracle --out_root exp/probe_oracle --feats_dir ...

Writes <out_root>/decode_<set>/<layer>/mel.{ark,scp} (out_root defaults to the probe exp) and
summary.json (probe/summary.py: per layer its record, the L1 to the heard and, where the set has
target.scp, the clean log-mel).
--oracle writes the input's own log-mel as the single layer "original". Re-running with the
same model and set does nothing.
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import argparse
import logging
import sys
from pathlib import Path

from espnet_probe.asr.register import register_encoders
from espnet_probe.families import UnsupportedFamily
from espnet_probe.probe.files import LAYER_BEST
from espnet_probe.utils.device import add_device_argument


PROBE_CHECKPOINTS = (LAYER_BEST, "valid.loss.ave.pth", "valid.loss.best.pth", "latest.pth")


def best_probe_checkpoint(exp: Path) -> Path:
    """Each layer's probe from its own best epoch, else ESPnet's best by the mean L1."""
    for name in PROBE_CHECKPOINTS:
        if (exp / name).exists():
            return exp / name
    raise FileNotFoundError(f"no probe checkpoint ({', '.join(PROBE_CHECKPOINTS)}) in {exp}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--probe_exp", type=Path, help="probe_train output_dir")
    p.add_argument("--oracle", action="store_true", help="write the heard log-mel (no model)")
    p.add_argument("--checkpoint", type=Path, help="default: the averaged/best valid checkpoint")
    p.add_argument("--feats_dir", type=Path, nargs="+", required=True, help="dump/fbank/<set> ...")
    p.add_argument("--out_root", type=Path, help="default: --probe_exp")
    p.add_argument("--batch_frames", type=int, default=2000,
                   help="padded frames per batch (on a CPU, small batches stay in cache: 2,000 decode\n"
                        "the embedded test set 1.2x faster than 20,000, measured)")
    add_device_argument(p)
    args = p.parse_args(argv)
    if args.oracle == (args.probe_exp is not None):
        p.error("give either --probe_exp or --oracle")
    if args.oracle and args.out_root is None:
        p.error("--oracle needs --out_root")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from espnet_probe.probe.decode import HeardMel, ProbeDecodeError, decode_set
    from espnet_probe.tasks.probe import ProbeTask
    from espnet_probe.utils.checkpoint import check_fits, load_state_dict

    register_encoders()
    torch.set_num_threads(1)
    out_root = args.out_root or args.probe_exp
    try:
        if args.oracle:
            model, settings = HeardMel(), {"oracle": True}
        else:
            checkpoint = args.checkpoint or best_probe_checkpoint(args.probe_exp)
            # built without a file (ESPnet's loader unpickles in full), then given checked tensors
            config = args.probe_exp / "config.yaml"
            model, _ = ProbeTask.build_model_from_file(config, None, args.device)
            check_fits(model, load_state_dict(checkpoint, args.device), checkpoint, config)
            model.eval()
            settings = {"checkpoint": str(checkpoint), "mtime": Path(checkpoint).stat().st_mtime}
        for feats_dir in args.feats_dir:
            out = out_root / f"decode_{feats_dir.name}"
            summary = decode_set(model, feats_dir, out, args.batch_frames, settings=settings)
            print(f"probe_decode {out}: {summary.utterances} utts, L1 "
                  + ", ".join(f"{d.layer.name} {d.l1_heard:.3f}" for d in summary.layers),
                  file=sys.stderr)
    except (ProbeDecodeError, FileNotFoundError, ValueError, UnsupportedFamily) as e:
        print(f"probe_decode: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
