"""Helpers shared by the bench scripts: real utterances to time on, and the machine's name."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
LIBRISPEECH = REPO.parent / "shared" / "data" / "LibriSpeech" / "train-clean-5"


def pick_utterances(root: Path, n: int, lo: float, hi: float) -> list[Path]:
    """First utterance of lo..hi seconds (in sorted order) of each of the first n speakers."""
    if not root.is_dir():
        sys.exit(f"bench: real data not found at {root} (see ../shared/data/README)")
    picked = []
    for spk in sorted(root.iterdir(), key=lambda d: d.name):
        for flac in sorted(spk.glob("*/*.flac")):
            if lo <= sf.info(flac).duration <= hi:
                picked.append(flac)
                break
        if len(picked) == n:
            break
    return picked


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
