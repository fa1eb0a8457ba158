"""The one way this project opens a PyTorch checkpoint: tensors and plain data, never code.

A checkpoint is a pickle, and unpickling can call any function the file names (a state dict
carrying an object whose ``__reduce__`` returns ``os.system`` runs a command on load).  Brought
models come from model zoos and colleagues' shares, so every checkpoint is opened with
``torch.load(weights_only=True)``: tensors, containers, numbers and strings, plus numpy scalars,
dtypes and timedeltas (ESPnet's trainer keeps them in its reporter statistics); nothing else.

A file that needs more is refused in one line naming it and the global it asks for.  The user
may opt in, per run, with ``--trust_checkpoints true`` (run.sh) or ``PROBE_TRUST_CHECKPOINTS=true``
(any entry point): such a file is then unpickled in full, **which runs whatever code it
carries**; do it only for files whose origin you trust.

ESPnet's own loaders (``build_model_from_file``, ``Speech2Text``, ``--init_param``) unpickle in
full, so they are only ever given a model built without a file, or a copy of a state dict this
module has checked (``checked_init_params``).
"""

from __future__ import annotations

import datetime
import logging
import os
import pickle
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Mapping, Union

import numpy as np
import torch

from espnet_probe.utils.argv import option_value
from espnet_probe.utils.fileio import atomic_path

log = logging.getLogger(__name__)

TRUST_ENV = "PROBE_TRUST_CHECKPOINTS"
OPT_IN = f"--trust_checkpoints true (run.sh) or {TRUST_ENV}=true"
# values that carry data only (reconstructing them calls no function the file names): ESPnet's
# trainer checkpoint.pth holds numpy floats and timedeltas in its reporter statistics
_PLAIN_DATA = [datetime.timedelta, np.dtype, np._core.multiarray.scalar,
               *{type(np.dtype(t)) for t in "?bhilqBHILQefdgFDG"}]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as given; the message names the file."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint that would run code if unpickled, opened without the user's opt-in."""


def trusted() -> bool:
    """Whether the user opted in to unpickling checkpoints in full (this process and its children)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def load_checkpoint(path: Union[str, Path], map_location: str = "cpu") -> object:
    """The object in checkpoint ``path``, unpickled with tensors and plain data only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_PLAIN_DATA):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        wanted = re.search(r"GLOBAL (\S+)", str(e))
        what = f"'{wanted.group(1)}'" if wanted else "objects beyond tensors"
        if not trusted():
            raise UntrustedCheckpointError(
                f"{path}: refused: opening it would unpickle {what}, which can run code; if you "
                f"trust where it came from, rerun with {OPT_IN}") from None
        log.warning("%s: unpickled in full (it asks for %s), as %s allows", path, what, TRUST_ENV)
        # The documented opt-in, and the only full unpickling in this project.
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, or another "
                              f"format: {type(e).__name__}: {first})") from None


def load_state_dict(path: Union[str, Path], map_location: str = "cpu") -> "dict[str, torch.Tensor]":
    """The parameter tensors of a checkpoint: a plain state dict, or the ``model`` of ESPnet's
    trainer ``checkpoint.pth`` (``module`` of a DeepSpeed one)."""
    state = load_checkpoint(path, map_location)
    if isinstance(state, Mapping):
        for key in ("model", "module"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: not a state dict (holds a {type(state).__name__})")
    if not state:
        raise CheckpointError(f"{path}: an empty state dict (no parameters)")
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(map(str, not_tensors[:5]))}"
                              + (" ..." if len(not_tensors) > 5 else ""))
    return dict(state)


def check_fits(model: torch.nn.Module, state: Mapping[str, torch.Tensor], checkpoint: Union[str, Path],
               config: Union[str, Path]) -> None:
    """Load ``state`` into ``model`` with every name and shape matching, or say what differs:
    a silently half-loaded model would make every probe meaningless."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        def few(keys: List[str]) -> str:
            return ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")
        parts = [f"{len(missing)} missing ({few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({few(shapes)})" if shapes else ""]
        raise CheckpointError(f"{checkpoint} does not match the model built from {config}: "
                              + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)


def _init_param_path(spec: str) -> str:
    # ESPnet's --init_param is <file>:<src_key>:<dst_key>:<exclude_keys>
    return spec.split(":", 1)[0]


@contextmanager
def checked_init_params(argv: List[str]) -> Iterator[List[str]]:
    """``argv`` with every ``--init_param`` file replaced by a checked copy of its state dict
    (ESPnet unpickles that file in full).  The copies live in ``<output_dir>/checked_init/``,
    so the config.yaml ESPnet writes names files that exist; without --output_dir, in a
    temporary dir for the time of the ``with`` block."""
    if "--init_param" not in argv and not any(a.startswith("--init_param=") for a in argv):
        yield list(argv)
        return
    output_dir = option_value(argv, "--output_dir")
    with tempfile.TemporaryDirectory(prefix="checked_init_") as tmp:
        where = Path(output_dir) / "checked_init" if output_dir else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        out, i, n = [], 0, 0
        while i < len(argv):
            arg = argv[i]
            if arg == "--init_param" or arg.startswith("--init_param="):
                if "=" in arg:
                    specs, i = [arg.split("=", 1)[1]], i + 1
                else:  # nargs="*": every value up to the next option
                    j = i + 1
                    while j < len(argv) and not argv[j].startswith("--"):
                        j += 1
                    specs, i = argv[i + 1:j], j
                copies = []
                for spec in specs:
                    source = _init_param_path(spec)
                    copy = where / f"{n}_{Path(source).name}"
                    n += 1
                    state = load_state_dict(source)
                    with atomic_path(copy) as part:
                        torch.save(state, part)
                    copies.append(str(copy) + spec[len(source):])
                out += ["--init_param", *copies]
            else:
                out.append(arg)
                i += 1
        yield out
