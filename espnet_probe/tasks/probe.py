"""ESPnet task that trains the frame-wise layer probes on a frozen ASR model.

A real ``AbsTask``: ESPnet's trainer, YAML configs, --resume, checkpoints, DDP through
``espnet2.bin.launch`` and ``build_model_from_file`` all work as for any ESPnet task.

Data: ``speech`` = what the ASR model was trained on: the feature ark ((T, 240): log-mel |
delta | accel, dump/fbank/<set>/feats.scp) for our models, the waveform ark ((N,) samples,
dump/fbank/<set>/wave.scp) for a model with its own frontend; for a waveform model also
``mel`` = the feature ark of the same audio (the heard log-mel, and the target frames); for
``target: clean`` also ``target`` = the clean log-mel ark of the same utterance ((T, 80),
dump/fbank/<set>/target.scp).

Task options:
  --asr_train_config / --asr_model_file   the frozen ASR model (config.yaml + checkpoint)
  --asr_init trained|random               random = the control: encoder re-initialised (seeded)
  --layers all | name ...                 which layers to probe (input = the features, "layer 0")
  --target heard|clean                    L1 to the log-mel the encoder heard (default) or clean
  --probe_conf hidden_size=256 highway_layers=4 sample_frames=4000 mix_batches=8
                                          (sample_frames: target frames per training batch
                                          the loss is taken over, 0 = all; mix_batches: each
                                          step's loss over a share of the last N batches' samples)

Defaults, and the keys --probe_conf accepts, are ProbeModel's keyword arguments (as ESPnet's
tasks take theirs, ``get_default_kwargs``): a new argument there is an option here.
"""

from __future__ import annotations

import argparse
from typing import Callable, Collection, Dict, List, Optional, Tuple

import numpy as np
import torch
from espnet2.tasks.abs_task import AbsTask
from espnet2.train.collate_fn import CommonCollateFn
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import str_or_none

from espnet_probe.layers import load_asr_model
from espnet_probe.probe.model import ProbeModel, probed_layers, reinitialise_encoder
from espnet_probe.probe.trainer import ProbeTrainer
from espnet_probe.utils.conf import checked_conf, conf_defaults

# ProbeModel's arguments that are task options of their own; the rest are --probe_conf's
TASK_OPTION_ARGS = ("target", "n_mels", "target_period")
MODEL_DEFAULTS = conf_defaults(ProbeModel)
PROBE_CONF_DEFAULTS = conf_defaults(ProbeModel, set_elsewhere=TASK_OPTION_ARGS)


class ProbeTask(AbsTask):
    num_optimizers: int = 1
    class_choices_list = []
    trainer = ProbeTrainer  # keeps each layer's probe from its own best epoch

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Probe related")
        group.add_argument("--asr_train_config", type=str_or_none, default=None,
                           help="config.yaml of the trained ESPnet ASR model to probe")
        group.add_argument("--asr_model_file", type=str_or_none, default=None,
                           help="its checkpoint (e.g. valid.loss.ave.pth)")
        group.add_argument("--asr_init", choices=["trained", "random"], default="trained",
                           help="random: the control, the encoder re-initialised with --seed")
        group.add_argument("--layers", type=str, nargs="+", default=["all"],
                           help="'all' or layer names (python -m espnet_probe.bin.probe_train "
                                "--list_layers CONFIG CHECKPOINT prints them)")
        group.add_argument("--target", choices=["heard", "clean"], default=MODEL_DEFAULTS["target"],
                           help="heard: the log-mel the encoder was given (noisy for noisy data); "
                                "clean: the 'target' data entry")
        group.add_argument("--target_period", type=float, default=MODEL_DEFAULTS["target_period"],
                           help="seconds per frame of the target log-mel (conf/fbank.yaml's hop)")
        group.add_argument("--n_mels", type=int, default=MODEL_DEFAULTS["n_mels"],
                           help="mel bins of the target")
        group.add_argument("--layer_cache_gb", type=float, default=4.0,
                           help="training only: memory for each batch's layers after the first "
                                "epoch (0: off)")
        group.add_argument("--probe_conf", action=NestedDictAction, default=PROBE_CONF_DEFAULTS,
                           help=f"probe options (ProbeModel's): {', '.join(PROBE_CONF_DEFAULTS)}")

    @classmethod
    def build_collate_fn(cls, args: argparse.Namespace, train: bool
                         ) -> Callable[[Collection[Tuple[str, Dict[str, np.ndarray]]]],
                                       Tuple[List[str], Dict[str, torch.Tensor]]]:
        return CommonCollateFn(float_pad_value=0.0, int_pad_value=-1)

    @classmethod
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool
                            ) -> Optional[Callable[[str, Dict[str, np.ndarray]], Dict[str, np.ndarray]]]:
        return None

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("speech",)

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("mel", "target")

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> ProbeModel:
        if not args.asr_train_config or not args.asr_model_file:
            raise ValueError("the probe task needs --asr_train_config and --asr_model_file")
        probe_conf = checked_conf("probe_conf", args.probe_conf, PROBE_CONF_DEFAULTS)
        asr = load_asr_model(args.asr_train_config, args.asr_model_file)
        if args.asr_init == "random":
            reinitialise_encoder(asr, seed=args.seed)
        layers = list(args.layers)
        wanted = "all" if layers == ["all"] else layers
        # configs from before target_period existed
        target_period = getattr(args, "target_period", MODEL_DEFAULTS["target_period"])
        probed = probed_layers(asr, wanted, target_period)
        return ProbeModel(asr, probed, target=args.target, n_mels=args.n_mels,
                          target_period=target_period, **probe_conf)

    @classmethod
    def build_optimizers(cls, args: argparse.Namespace, model: torch.nn.Module) -> List[torch.optim.Optimizer]:
        from espnet2.tasks.abs_task import optim_classes

        optim_class = optim_classes.get(args.optim)
        if optim_class is None:
            raise ValueError(f"--optim must be one of {list(optim_classes)}: {args.optim}")
        # only the probes learn; the ASR model is frozen
        params = [p for p in model.parameters() if p.requires_grad]
        return [optim_class(params, **args.optim_conf)]
