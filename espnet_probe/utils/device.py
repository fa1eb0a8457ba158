"""The ``--device`` option of the inference tools (decoding, probes, speaker scoring).

Training goes through ESPnet's ``--ngpu``; inference tools take a torch device name instead so
a GPU node can run them unchanged (``run.sh --gpu_inference true`` passes ``--device cuda``).
A device that is not there is refused when the arguments are parsed, before minutes of
loading, with the reason.
"""

from __future__ import annotations

import argparse
import re

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def checked_device(name: str) -> str:
    """``name`` if torch can run on it here ('cpu', 'cuda' or 'cuda:N'), else ValueError."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"device '{name}' is not one of cpu, cuda, cuda:N")
    if name == "cpu":
        return name
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"device '{name}': torch sees no CUDA device here "
                         "(torch.cuda.is_available() is False); use cpu or run on a GPU node")
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise ValueError(f"device '{name}': only {torch.cuda.device_count()} CUDA device(s) here")
    return name


def _device_arg(name: str) -> str:
    try:
        return checked_device(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=_device_arg, default="cpu",
                        help="torch device for inference: cpu (default), cuda or cuda:N")


def model_device(model) -> "torch.device":
    """Where ``model``'s parameters live (cpu for a model without parameters)."""
    import torch

    for param in getattr(model, "parameters", tuple)():
        return param.device
    return torch.device("cpu")
