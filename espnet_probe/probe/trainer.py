"""ESPnet's trainer, keeping each layer's probe from the epoch where *that* probe was best.

The probes of one experiment are independent networks trained side by side (one encoder pass
feeds them all), and they converge at different speeds: the probe of ``input`` needs few
epochs, a deep BLSTM layer's more, and some start to overfit while others still improve.
Picking one epoch for all of them by the mean loss would judge some layers by an
under-trained probe.  So:

- every layer's validation L1 (``valid.l1_<layer>``) is a best-model criterion of ESPnet's own
  trainer, which keeps the best epoch of each (``valid.l1_<layer>.best.pth``) besides the mean
  (``valid.loss.best.pth``);
- when training ends, ``valid.layer_best.pth`` is put together from those: each probe's weights
  from its own best epoch (the frozen ASR model is the same in all), and ``probe_training.json``
  records per layer the chosen epoch, its validation L1 and the whole train / valid curve;
- training stops at ``max_epoch`` or, with ``patience``, when the mean validation L1 has not
  improved for that many epochs (ESPnet's early stopping).  The curves show whether each
  layer's probe had flattened by then (``converged`` in probe_training.json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from espnet2.train.trainer import Trainer, TrainerOptions
from espnet2.utils.build_dataclass import build_dataclass

from espnet_probe.probe.files import LAYER_BEST, TRAINING_RECORD
from espnet_probe.utils.checkpoint import load_checkpoint, load_state_dict
from espnet_probe.utils.fileio import atomic_open, atomic_path

# A probe counts as converged when its last `CONVERGED_EPOCHS` epochs improved its best valid L1
# by less than `CONVERGED_TOLERANCE` (relative): more epochs would not change what it shows.
CONVERGED_EPOCHS = 3
CONVERGED_TOLERANCE = 0.01


def layer_criteria(layer_names: Sequence[str]) -> List[List[str]]:
    return [["valid", f"l1_{name}", "min"] for name in layer_names]


@dataclasses.dataclass
class ProbeTrainerOptions(TrainerOptions):
    layer_cache_gb: float = 4.0  # ProbeTask's --layer_cache_gb


class ProbeTrainer(Trainer):
    @classmethod
    def build_options(cls, args) -> ProbeTrainerOptions:
        return build_dataclass(ProbeTrainerOptions, args)

    @classmethod
    def run(cls, model, optimizers, schedulers, train_iter_factory, valid_iter_factory,
            plot_attention_iter_factory, trainer_options, distributed_option) -> None:
        if trainer_options.layer_cache_gb > 0:
            # the frozen model's layers do not change between epochs: computed once
            model.cache_layers(int(trainer_options.layer_cache_gb * 2**30))
        criteria = [list(c) for c in trainer_options.best_model_criterion]
        for criterion in layer_criteria(model.layer_names):
            if criterion not in criteria:
                criteria.append(criterion)
        trainer_options.best_model_criterion = criteria
        super().run(model, optimizers, schedulers, train_iter_factory, valid_iter_factory,
                    plot_attention_iter_factory, trainer_options, distributed_option)
        if not distributed_option.distributed or distributed_option.dist_rank == 0:
            record = assemble_layer_best(Path(trainer_options.output_dir), model.layer_names)
            logging.info("per-layer best epochs: %s", ", ".join(
                f"{n} {r['best_epoch']} ({r['valid_l1']:.4f})" for n, r in record["layers"].items()))


def training_curves(output_dir: Path) -> Dict[int, Dict[str, Dict[str, float]]]:
    """ESPnet's per-epoch statistics ({epoch: {phase: {key: value}}}) from checkpoint.pth."""
    return load_checkpoint(output_dir / "checkpoint.pth")["reporter"]["stats"]


def converged(curve: Sequence[float]) -> bool:
    if len(curve) <= CONVERGED_EPOCHS:
        return False
    before = min(curve[:-CONVERGED_EPOCHS])
    return min(curve) >= before * (1.0 - CONVERGED_TOLERANCE)


def assemble_layer_best(output_dir: Path, layer_names: Sequence[str]) -> dict:
    """Write valid.layer_best.pth (each probe from its own best epoch) and probe_training.json."""
    stats = training_curves(output_dir)
    epochs = sorted(stats)
    layers = {}
    state = None
    for name in layer_names:
        key = f"l1_{name}"
        valid = [float(stats[e]["valid"][key]) for e in epochs if key in stats[e].get("valid", {})]
        train = [float(stats[e]["train"][key]) for e in epochs if key in stats[e].get("train", {})]
        if not valid:
            raise RuntimeError(f"{output_dir}: no validation L1 of layer {name} in checkpoint.pth")
        best = epochs[min(range(len(valid)), key=valid.__getitem__)]
        best_file = output_dir / f"valid.{key}.best.pth"
        if not best_file.exists():
            raise RuntimeError(f"{best_file} is missing: ESPnet's trainer did not keep the best "
                               f"epoch of layer {name}")
        source = load_state_dict(best_file)
        if state is None:
            state = dict(source)
        prefix = f"probes.{name}."
        for k, v in source.items():
            if k.startswith(prefix):
                state[k] = v
        layers[name] = {"best_epoch": best, "valid_l1": min(valid), "converged": converged(valid),
                        "valid_curve": valid, "train_curve": train}
    with atomic_path(output_dir / LAYER_BEST) as tmp:
        torch.save(state, tmp)
    record = {"epochs": len(epochs), "layers": layers,
              "mean_valid_l1": [float(stats[e]["valid"]["loss"]) for e in epochs]}
    with atomic_open(output_dir / TRAINING_RECORD) as f:
        json.dump(record, f, indent=1)
    return record
