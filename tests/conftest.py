"""Shared fixtures: where the real data lives, and helpers to build tiny data dirs."""

from __future__ import annotations

# The test run is an entry point like the tools: ESPnet's typeguard checks off before any test
# module imports ESPnet, so tests run our code as the recipe does and do not pay for the checks
# (they doubled the time of the ESPnet-heavy test modules). PROBE_TYPECHECK=1 keeps them on:
# `PROBE_TYPECHECK=1 tools/venv/bin/python -m pytest tests` checks every call into ESPnet.
import espnet_probe.utils.typecheck  # noqa: F401,I001

import os

# One intra-op thread per process, as the recipe's jobs have (path.sh): the two xdist workers fill
# the two cores, and a second thread per worker only spins (unit tests alone: 123 s wall and 218 s
# of CPU against 136 s and 246 s with torch's default of one thread per core)
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest

from stock_models import stock_asr_models  # noqa: F401  (session fixture: stock ESPnet2 models)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROBE_SHARED_DATA", REPO.parent / "shared" / "data"))
LIBRISPEECH = SHARED_DATA / "LibriSpeech"
MUSAN_MINI = SHARED_DATA / "musan_mini"


# The end-to-end files first, then the longest of the others: each xdist worker takes whole
# files in collection order (--no-loadscope-reorder), two each at the start (the first and third
# file to one worker, the second and fourth to the other), so the two brought-model runs start at
# once on different workers instead of closing the run, and the short files come last, to
# whichever worker is free. In a quiet run before this order (558 s) they took 257 s (stock
# models), 269 s (families), 237 s (the default run's chain), 50 s (Whisper) and 43 s (the
# LibriSpeech egs), the other files 213 s; test_whisper.py, alphabetically last, closed the run
# alone for its last 50 s. test_stock_models is left in place: it waits for the stock models
# test_bring_recipe trains.
LONGEST_FIRST = ("test_bring_recipe.py", "test_bring_families.py", "test_recipe.py",
                 "test_whisper.py", "test_librispeech.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))


def egs_recipe(root: Path) -> Path:
    """A scratch copy of the repository's layout (symlinks) under ``root`` and its LibriSpeech
    egs dir, returned: a run there writes its data/, dump/ and exp/ under ``root``."""
    for name in ("run.sh", "path.sh", "cmd.sh", "local", "conf", "scripts", "tools"):
        (root / name).symlink_to(REPO / name)
    recipe = root / "egs" / "librispeech_probe"
    recipe.mkdir(parents=True)
    for name in ("run.sh", "local", "conf"):
        (recipe / name).symlink_to(REPO / "egs" / "librispeech_probe" / name)
    return recipe


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set PROBE_SHARED_DATA to its location)")
    return path


@pytest.fixture(scope="session")
def librispeech_dir() -> Path:
    return need(LIBRISPEECH)


@pytest.fixture(scope="session")
def musan_mini_dir() -> Path:
    return need(MUSAN_MINI)


@pytest.fixture
def recipe_env() -> dict:
    """Environment for running the recipe's shell stages from a test."""
    env = dict(os.environ)
    env["PATH"] = f"{REPO / 'tools' / 'venv' / 'bin'}:{env['PATH']}"
    return env
