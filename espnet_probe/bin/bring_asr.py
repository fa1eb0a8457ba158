"""Bring ESPnet2 ASR models into the recipe: each an egs2 exp dir or a packed archive.

  python -m espnet_probe.bin.bring_asr --exp_root exp --asr_exps /egs2/x/asr1/exp/asr_conformer model.zip
      [--asr_recipe_dir /egs2/x/asr1] [--asr_model_file valid.acc.best.pth]
  python -m espnet_probe.bin.bring_asr --checkpoint_of exp/asr_conformer_brought

The first form makes exp/asr_<name>_brought/ for each model (config.yaml with its paths
resolved, experiment.yaml; see espnet_probe/asr/brought.py) and prints their paths, one per
line; the second prints an experiment's checkpoint (ours or brought), as every stage picks it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_probe.asr.brought import BringError, best_checkpoint, bring, default_name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--asr_exps", nargs="+", default=[],
                   help="ESPnet2 ASR exp dirs or packed models (espnet2.bin.pack asr); Whisper:\n"
                        "a CTranslate2 model dir, an openai-whisper .pt file, or whisper:tiny.en")
    p.add_argument("--exp_root", type=Path, default=Path("exp"))
    p.add_argument("--asr_recipe_dir", type=Path,
                   help="where config.yaml's relative paths start (default: each exp dir's "
                        "grandparent, as in egs2/<corpus>/asr1/exp/<name>)")
    p.add_argument("--asr_model_file", help="checkpoint: a file name in each exp dir, or a path")
    p.add_argument("--checkpoint_of", type=Path, metavar="EXP", help="print EXP's checkpoint")
    args = p.parse_args(argv)
    if args.checkpoint_of:
        try:
            print(best_checkpoint(args.checkpoint_of))
        except (FileNotFoundError, BringError) as e:
            print(f"bring_asr: error: {e}", file=sys.stderr)
            return 1
        return 0
    if not args.asr_exps:
        p.error("give --asr_exps or --checkpoint_of")
    # torch comes in with these, for bringing only: run.sh asks --checkpoint_of once for every
    # training job it starts, and that answer needs no torch (0.2 s instead of 2.3 s)
    from espnet_probe.asr.whisper import WhisperSourceError
    from espnet_probe.utils.checkpoint import CheckpointError

    names: dict[str, Path] = {}
    for source in args.asr_exps:
        name = default_name(source)
        if name in names:
            p.error(f"--asr_exps: {names[name]} and {source} would both be named '{name}'; "
                    "rename one of them (a symlink with another name will do)")
        names[name] = source
    try:
        for name, source in names.items():
            exp = args.exp_root / f"asr_{name}_brought"
            record = bring(source, exp, args.asr_recipe_dir, args.asr_model_file, name)
            decoding = record["decoding"]
            weight = f" (ctc_weight {decoding['ctc_weight']:g})" if "ctc_weight" in decoding else ""
            print(f"bring_asr {name}: {record['encoder']} encoder, {record['input']} input, "
                  f"{decoding['method']}{weight}, checkpoint {record['checkpoint']}", file=sys.stderr)
            print(exp)
    except (BringError, CheckpointError, WhisperSourceError, FileNotFoundError) as e:
        print(f"bring_asr: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
