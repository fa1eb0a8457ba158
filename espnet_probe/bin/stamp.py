"""The freshness rule for shell scripts (espnet_probe.utils.freshness.Stamp).

  python -m espnet_probe.bin.stamp begin DIR [--inputs PATH ...] [--options STRING] [--name N]
          [--owned PATH ...] [--no_resume]
      prints done | resume | changed | new; unless done or resume, what DIR's output owns is
      removed first (--owned, default every file in DIR but experiment.yaml records)
  python -m espnet_probe.bin.stamp finish DIR [--inputs PATH ...] [--options STRING] [--name N]
      marks it complete
  python -m espnet_probe.bin.stamp is_done DIR [--name N]
      exit status 0 if DIR holds a finished output (made with any settings), else 1

The settings are the fingerprint of every --inputs path (a data dir, feature dir, other dir or
file) and the --options string (an option value starting with "-" goes as --options=STRING).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_probe.utils.freshness import Stamp, fingerprint


def settings_of(inputs: list[str], options: str) -> dict:
    """What an output made from ``inputs`` with ``options`` depends on; ValueError names a
    missing input (its fingerprint would silently stand for nothing)."""
    for path in inputs:
        if not Path(path).exists():
            raise ValueError(f"input {path} not found")
    return {"inputs": {path: fingerprint(path) for path in inputs}, "options": options}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("begin", "finish", "is_done"))
    p.add_argument("dir")
    p.add_argument("--inputs", nargs="+", default=[], help="what the output is made from")
    p.add_argument("--options", default="", help="the options it is made with, one string")
    p.add_argument("--name", default="", help="tells apart several outputs in one dir")
    p.add_argument("--owned", nargs="+", help="begin: what to remove when it is made afresh")
    p.add_argument("--no_resume", action="store_true",
                   help="begin: an unfinished output is made again, not continued")
    args = p.parse_args(argv)
    stamp = Stamp(args.dir, args.name)
    if args.action == "is_done":
        return 0 if stamp.is_done() else 1
    # finish records the settings it was begun with: had an input changed meanwhile, the next
    # begin sees the change and makes the output again
    settings = stamp.begun_with() if args.action == "finish" else None
    if settings is None:
        try:
            settings = settings_of(args.inputs, args.options)
        except ValueError as e:
            print(f"stamp {args.action} {args.dir}: {e}", file=sys.stderr)
            return 1
    if args.action == "finish":
        stamp.finish(settings)
        return 0
    print(stamp.begin(settings, args.owned, resumable=not args.no_resume))
    return 0


if __name__ == "__main__":
    sys.exit(main())
