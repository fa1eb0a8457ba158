"""The freshness rule for shell scripts (espnet_probe.utils.freshness.Stamp).

  python -m espnet_probe.bin.stamp begin DIR SETTINGS [--name N] [--owned PATH ...] [--no_resume]
      prints done | resume | changed | new; unless done or resume, what DIR's output owns is
      removed first (--owned, default every file in DIR but experiment.yaml records)
  python -m espnet_probe.bin.stamp finish DIR SETTINGS [--name N]
      marks it complete

SETTINGS is one string: the inputs' fingerprints (python -m espnet_probe.bin.fingerprint) and the
options the output is made with.
"""

from __future__ import annotations

import argparse
import sys

from espnet_probe.utils.freshness import Stamp


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("begin", "finish"))
    p.add_argument("dir")
    p.add_argument("settings")
    p.add_argument("--name", default="", help="tells apart several outputs in one dir")
    p.add_argument("--owned", nargs="+", help="begin: what to remove when it is made afresh")
    p.add_argument("--no_resume", action="store_true",
                   help="begin: an unfinished output is made again, not continued")
    args = p.parse_args(argv)
    stamp = Stamp(args.dir, args.name)
    if args.action == "finish":
        stamp.finish(args.settings)
        return 0
    print(stamp.begin(args.settings, args.owned, resumable=not args.no_resume))
    return 0


if __name__ == "__main__":
    sys.exit(main())
