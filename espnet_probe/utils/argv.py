"""Reading an ESPnet command line before ESPnet's parser does (what our wrappers need of it)."""

from __future__ import annotations

from typing import Optional, Sequence


def option_value(argv: Sequence[str], name: str) -> Optional[str]:
    """The value of the last ``--name value`` / ``--name=value`` in argv (the last one wins,
    as in argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1:]
    return value
