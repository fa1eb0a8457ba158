"""Layer-wise pretraining of deep BLSTM encoders: grow the stack, one ESPnet run per stage.

Deep BLSTM stacks trained with CTC from scratch can sit on the blank/"language-model only"
plateau for a very long time.  Measured here on the embedded corpus (19 min of speech,
char CTC, 128 cells, Adam 3e-3, 1 CPU thread): a 3-layer BLSTM leaves the plateau after
~100 updates (dev CER 0.25 after 400), a 4-layer after ~250, a 5-layer is still at dev CER
0.65 after 1,700 updates; VGG + 1 BLSTM learns at once, VGG + 2 or more does not.  Neither
better initialisation, LayerNorm, other learning rates, Adadelta nor an intermediate CTC
loss at layer 3 changed that.  Growing the stack does (as in RETURNN's encoder
pretraining): train with the first few layers, then add layers on top of the trained ones.
The 5-layer BLSTM grown from 3 layers reaches dev CER 0.30 within 150 more updates.

The schedule is a key of our own in the ASR config, removed before ESPnet sees the config:

    encoder_pretraining:
        layers: [1, 3]    # BLSTM layers of each pretraining stage, before the full model
        epochs: 6         # epochs per stage, or one number per stage (e.g. [5, 3])

Each stage is an ordinary ESPnet run (``ASRTask.main``) in ``<output_dir>/pretrain/L<n>``
with ``--encoder_conf num_layers=<n>`` (and the first ``n`` subsample factors), initialised
from the previous stage with ESPnet's ``--init_param ... --ignore_init_mismatch true``
(which copies every parameter whose name and shape match: the lower layers and the CTC
head).  The full model then trains in ``<output_dir>`` from the last stage.  A finished
stage is stamped done (espnet_probe.utils.freshness) and skipped on re-runs; an interrupted one resumes through
ESPnet's ``--resume``.

A run given its own ``--init_param`` (a robust model fine-tuned from its trained baseline) has
no growth stages: they exist to get a model from scratch off the plateau, and a model that
starts from a trained one of the same shape is off it already.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import yaml

from espnet_probe.utils.argv import option_value
from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.freshness import Stamp
from espnet_probe.utils.yaml_io import load_yaml

CONFIG_KEY = "encoder_pretraining"


class PretrainingError(ValueError):
    """The encoder_pretraining section of an ASR config is unusable."""


@dataclass(frozen=True)
class Schedule:
    layers: List[int]
    epochs: List[int]  # one per stage


def parse_schedule(conf: dict, config_path: str) -> Optional[Schedule]:
    """The growth schedule of an ASR config, or None; checked against its encoder_conf."""
    section = conf.get(CONFIG_KEY)
    if section is None:
        return None
    where = f"{config_path}: {CONFIG_KEY}"
    if not isinstance(section, dict) or set(section) - {"layers", "epochs"}:
        raise PretrainingError(f"{where} must be a mapping with keys 'layers' and 'epochs', got {section!r}")
    layers, epochs = section.get("layers"), section.get("epochs")
    if not isinstance(layers, list) or not layers or not all(isinstance(n, int) for n in layers):
        raise PretrainingError(f"{where}.layers must be a non-empty list of layer counts, got {layers!r}")
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        epochs = [epochs] * len(layers)
    if (not isinstance(epochs, list) or len(epochs) != len(layers)
            or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in epochs)):
        raise PretrainingError(f"{where}.epochs must be a positive integer or one per stage of "
                               f"layers {layers!r}, got {section.get('epochs')!r}")
    total = (conf.get("encoder_conf") or {}).get("num_layers")
    if not isinstance(total, int):
        raise PretrainingError(f"{where} needs encoder_conf.num_layers (the full depth) in the config")
    if any(n < 1 for n in layers) or layers != sorted(set(layers)) or layers[-1] >= total:
        raise PretrainingError(
            f"{where}.layers must increase strictly and stay below encoder_conf.num_layers={total}, "
            f"got {layers}"
        )
    return Schedule(layers=layers, epochs=epochs)


def espnet_config(config: str | Path, out: str | Path) -> Path:
    """Write ``config`` without our pretraining key to ``out``: a file ESPnet's parser accepts."""
    with open(config) as f:
        conf = load_yaml(f) or {}
    with atomic_open(out, "w") as f:
        yaml.safe_dump({k: v for k, v in conf.items() if k != CONFIG_KEY}, f, sort_keys=False)
    return Path(out)


def _replace_option(argv: Sequence[str], name: str, value: str) -> List[str]:
    """argv without any ``--name`` occurrence, then ``--name value``."""
    out: List[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        if arg.startswith(name + "="):
            continue
        out.append(arg)
    return out + [name, value]


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def run_with_pretraining(argv: Sequence[str], run: Callable[[List[str]], None]) -> None:
    """Run ESPnet training ``run(argv)``, first through the config's growth stages if any."""
    config = option_value(argv, "--config")
    output_dir = option_value(argv, "--output_dir")
    if config is None:
        run(list(argv))
        return
    with open(config) as f:
        conf = load_yaml(f) or {}
    schedule = parse_schedule(conf, config)
    if schedule is None:
        run(list(argv))
        return
    if output_dir is None:
        raise PretrainingError(f"{config}: {CONFIG_KEY} needs --output_dir for its stage directories")

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stripped = out / "asr_config.yaml"  # what ESPnet reads: the config minus our key
    # every rank writes it (atomically): under torchrun, rank 1 must not read it before rank 0
    espnet_config(config, stripped)
    base = _replace_option(argv, "--config", str(stripped))
    if option_value(argv, "--init_param") is not None:
        run(base)
        return
    subsample = (conf.get("encoder_conf") or {}).get("subsample")

    previous: Optional[Path] = None
    for n, epochs in zip(schedule.layers, schedule.epochs):
        stage_dir = out / "pretrain" / f"L{n}"
        stage_argv = _replace_option(base, "--output_dir", str(stage_dir))
        stage_argv = _replace_option(stage_argv, "--max_epoch", str(epochs))
        stage_argv += ["--encoder_conf", f"num_layers={n}"]
        if isinstance(subsample, list):
            stage_argv += ["--encoder_conf", f"subsample={subsample[:n]}"]
        if previous is not None:
            stage_argv += ["--init_param", str(previous), "--ignore_init_mismatch", "true"]
        previous = stage_dir / f"{epochs}epoch.pth"
        stamp, settings = Stamp(stage_dir), {"layers": n, "epochs": epochs}
        if stamp.state(settings) == "done" and previous.exists():
            continue
        if _is_rank0():
            stamp.begin(settings)  # same stage begun before: ESPnet's --resume continues it
        run(stage_argv)
        if not previous.exists():
            raise PretrainingError(
                f"pretraining stage {stage_dir} finished without {previous.name}; "
                f"remove {stage_dir} to redo it"
            )
        if _is_rank0():
            stamp.finish(settings)
    run(base + ["--init_param", str(previous), "--ignore_init_mismatch", "true"])
