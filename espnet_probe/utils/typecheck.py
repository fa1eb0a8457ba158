"""ESPnet's run-time type checks off by default: they cost half of every inference tool's CPU.

ESPnet decorates most of its functions and classes with typeguard's ``@typechecked``, which, at
import time, re-parses each module's source and compiles an instrumented copy of every function
(py-spy on the default run: ``ast.parse`` and typeguard's ``instrument`` were 25-30 % of the CPU
of stages 6 and 8, and more than half of each decoding job's start-up).  The checks only
re-verify argument types that our tests already pin, so espnet_probe replaces the decorator with
one that returns its target unchanged before ESPnet is imported; Python's ``-O`` would do the
same but also drop every ``assert``.  ``PROBE_TYPECHECK=1`` keeps ESPnet's checks (debugging).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys


def _unchecked(target=None, **_options):
    """``@typechecked`` and ``@typechecked(...)`` alike: the target itself."""
    if target is None:
        return _unchecked
    return target


class _UncheckedTypeguard(importlib.abc.MetaPathFinder):
    """Loads the real typeguard, then swaps its decorator: no cost until something imports it."""

    def find_spec(self, name, path=None, target=None):
        if name != "typeguard":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        real = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, module):
                real.exec_module(module)
                module.typechecked = _unchecked

        spec.loader = Loader()
        return spec


def skip_espnet_typechecks() -> None:
    """Swap ``typeguard.typechecked`` for a no-op when it is first imported (PROBE_TYPECHECK=1:
    keep ESPnet's checks).  Modules decorated before this ran keep their checks."""
    if os.environ.get("PROBE_TYPECHECK", "0") == "1":
        return
    if "typeguard" in sys.modules:
        sys.modules["typeguard"].typechecked = _unchecked
    elif not any(isinstance(f, _UncheckedTypeguard) for f in sys.meta_path):
        sys.meta_path.insert(0, _UncheckedTypeguard())
