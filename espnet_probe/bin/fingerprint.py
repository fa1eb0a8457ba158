"""Print the digest of what an output made from PATH... depends on (espnet_probe.utils.freshness).

  python -m espnet_probe.bin.fingerprint data/train conf/fbank.yaml     # -> 12 hex digits
Stage scripts put it in the settings of their outputs' stamps (python -m espnet_probe.bin.stamp).
"""

from __future__ import annotations

import argparse
import sys

from espnet_probe.utils.freshness import fingerprint


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="data dirs, feature dirs, directories or files")
    p.add_argument("--length", type=int, default=12, help="hex digits printed")
    args = p.parse_args(argv)
    print(fingerprint(*args.paths)[: args.length])
    return 0


if __name__ == "__main__":
    sys.exit(main())
