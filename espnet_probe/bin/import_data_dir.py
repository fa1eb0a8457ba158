"""Import an existing Kaldi data dir: validate it, check every utterance's audio, copy it.

  python -m espnet_probe.bin.import_data_dir --src /corpora/mydata/train --dst data/train
  python -m espnet_probe.bin.import_data_dir --src old/dev --dst data/dev --fix --nj 2
The recipe's stage 1 imports its three kinds of set at once, under their recipe names
(--test_set_names prints those names, refusing collisions):
  python -m espnet_probe.bin.import_data_dir --data data --train_dir A --valid_dir B \
      --test_dirs "C D" --train_set train --valid_set dev --test_snrs "20 10 0"

wav.scp entries may be paths or ``cmd |`` pipes, with or without a segments file. Without
--fix, unsorted or inconsistent files are errors; --fix sorts, drops utterances missing from a
file, regenerates spk2utt and says what it changed. Audio problems (missing, empty, corrupt,
not 16 kHz mono, failing pipe) are all collected and the first few reported with their ids.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from espnet_probe.audio.io import SAMPLE_RATE
from espnet_probe.data.import_dir import (import_data_dir, import_recipe_sets,
                                         recipe_test_set_names)
from espnet_probe.utils.kaldi_dir import DataDirError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, help="existing Kaldi data dir")
    p.add_argument("--dst", type=Path, help="where to put it, e.g. data/NAME")
    recipe = p.add_argument_group("the recipe's sets (instead of --src/--dst)")
    recipe.add_argument("--data", type=Path, help="the recipe's data/ directory")
    recipe.add_argument("--train_dir")
    recipe.add_argument("--valid_dir")
    recipe.add_argument("--test_dirs", help="space-separated test data dirs")
    recipe.add_argument("--train_set", default="train")
    recipe.add_argument("--valid_set", default="dev")
    recipe.add_argument("--test_snrs", default="", help="the recipe's test SNRs (names of copies)")
    recipe.add_argument("--test_set_names", action="store_true",
                        help="only print the test sets' names, one line, and check them")
    p.add_argument("--fix", action="store_true",
                   help="sort tables, drop inconsistent utterances, regenerate spk2utt")
    p.add_argument("--check_audio", action=argparse.BooleanOptionalAction, default=True,
                   help="load every utterance's audio and report problems (default: on)")
    p.add_argument("--require_text", action=argparse.BooleanOptionalAction, default=True,
                   help="a text file is required (default: on)")
    p.add_argument("--nj", type=int, default=1, help="parallel audio readers (threads)")
    p.add_argument("--sample_rate", type=int, default=SAMPLE_RATE,
                   help="the sample rate every utterance must have")
    return p


def report_line(src, dst, rep, seconds: float) -> str:
    """One summary line per imported dir (seconds: since the command started)."""
    audio = (f", audio checked ({rep.audio_seconds / 3600:.2f} h)" if rep.audio_checked
             else ", audio not checked")
    return (f"import_data_dir: {src} -> {dst}: {rep.n_utts} utterances, {rep.n_spk} speakers, "
            f"{rep.n_recordings} recordings{audio} in {seconds:.1f} s")


def print_changes(rep, fix: bool) -> None:
    for change in rep.changes:
        print(f"fixed: {change}", file=sys.stderr)
    if fix and not rep.changes:
        print("fixed: nothing needed fixing", file=sys.stderr)
    if rep.ignored_files:
        print(f"not copied (not data-dir tables this recipe uses): "
              f"{', '.join(rep.ignored_files)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = get_parser()
    args = p.parse_args(argv)
    t0 = time.time()
    snrs = args.test_snrs.split()
    try:
        if args.test_set_names:
            if not args.test_dirs:
                p.error("--test_set_names needs --test_dirs")
            names = recipe_test_set_names(args.test_dirs, train_set=args.train_set,
                                          valid_set=args.valid_set, snrs=snrs)
            print(" ".join(names))
            return 0
        if args.src is None:
            if not (args.data and args.train_dir and args.valid_dir and args.test_dirs):
                p.error("give --src and --dst, or --data, --train_dir, --valid_dir and --test_dirs")
            reports = import_recipe_sets(
                args.data, train_dir=args.train_dir, valid_dir=args.valid_dir,
                test_dirs=args.test_dirs, train_set=args.train_set, valid_set=args.valid_set,
                snrs=snrs, fix=args.fix, nj=args.nj)
            for name, rep in reports.items():
                print_changes(rep, args.fix)
                print(report_line(rep.source, args.data / name, rep, time.time() - t0))
            return 0
        if args.dst is None:
            p.error("--src needs --dst")
        rep = import_data_dir(args.src, args.dst, fix=args.fix, audio_check=args.check_audio,
                              require_text=args.require_text, nj=args.nj,
                              sample_rate=args.sample_rate)
    except DataDirError as e:
        print(f"import_data_dir: error: {e}", file=sys.stderr)
        return 1
    print_changes(rep, args.fix)
    print(report_line(args.src, args.dst, rep, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
