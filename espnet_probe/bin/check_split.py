"""Validate the recipe's data dirs and that held-out speakers never occur in training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_probe.utils.kaldi_dir import DataDirError, check_speaker_split, load_data_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="data", help="directory holding the data dirs")
    p.add_argument("--train", required=True)
    p.add_argument("--valid", required=True)
    p.add_argument("--test", nargs="+", required=True)
    args = p.parse_args(argv)
    names = [args.train, args.valid, *args.test]
    try:
        sets = {n: load_data_dir(Path(args.data) / n) for n in names}
        check_speaker_split(sets[args.train], {n: sets[n] for n in names[1:]})
    except DataDirError as e:
        print(f"check_split: error: {e}", file=sys.stderr)
        return 1
    for n, d in sets.items():
        print(f"{n}: {len(d.utt2spk)} utterances, {len(set(d.utt2spk.values()))} speakers",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
