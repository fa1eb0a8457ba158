"""Importing this module turns ESPnet's run-time type checks off for the process.  The tools that
load ESPnet import it first, when run as a program::

    if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
        import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

Why: ESPnet decorates most of its functions and classes with typeguard's ``@typechecked``, which,
at import time, re-parses each module's source and compiles an instrumented copy of every
function.  py-spy on the default run: ``ast.parse`` and typeguard's ``instrument`` were 25-30 %
of the CPU of stages 6 and 8 and more than half of each decoding job's start-up; without them
``import espnet2.tasks.asr`` is 2.5x cheaper (11.3 -> 4.5 s, bench/RESULTS_default_run_changes.md)
and stage 8 took 50 s instead of 102 s (BENCHMARKS.md); ``probe_train --help`` costs 3.9 s of
CPU instead of 9.8 s.  The checks only re-verify argument types, so a tool swaps the decorator for
one that returns its target unchanged before ESPnet is imported; Python's ``-O`` would do the
same but also drop every ``assert``.  typeguard itself is imported at once (0.1 s): every tool
that imports this module loads ESPnet, which imports it anyway.

Only an entry point does this (a running tool; the test run, in tests/conftest.py): importing
espnet_probe or a tool's functions (a notebook, a user's script) leaves typeguard as ESPnet set
it. ``PROBE_TYPECHECK=1`` keeps the checks in a tool and in the tests too (debugging).  Modules
decorated before the import keep their checks, hence "first".
"""

from __future__ import annotations

import os

import typeguard


def _unchecked(target=None, **_options):
    """``@typechecked`` and ``@typechecked(...)`` alike: the target itself."""
    if target is None:
        return _unchecked
    return target


if os.environ.get("PROBE_TYPECHECK", "0") != "1":
    typeguard.typechecked = _unchecked  # what ESPnet's ``from typeguard import typechecked`` gets
