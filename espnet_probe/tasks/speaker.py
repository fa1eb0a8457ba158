"""ESPnet task that trains the ThinResNet + GhostVLAD speaker encoder (espnet_probe.speaker.resnet).

A real ``AbsTask``: ESPnet's trainer, YAML configs, --resume, checkpoints, DDP through
``espnet2.bin.launch`` and ``build_model_from_file`` all work as for any ESPnet task.

Data: ``speech`` = 16 kHz audio (type ``sound``, a wav.scp of files), ``spk_labels`` = one
integer speaker id per utterance (type ``text_int``). espnet_probe.bin.speaker_train writes
both, and the held-out split, from a Kaldi data dir. Training takes a random ``--crop_seconds``
window of every utterance (a new one each epoch; shorter utterances are repeated to fill it),
validation the centre window, so batches need no padding and the valid loss is comparable
across epochs.

Task options:
  --num_spk N               training speakers (the classifier's size)
  --frontend_conf n_mels=64 ...   FbankConfig fields for the log-mel front end
  --encoder_conf widths=[32,64,128,256] blocks=[3,4,6,3] stem_kernel=3 stem_stride=1
                 descriptor_dim=512 clusters=8 ghost_clusters=2 embed_dim=512
  --loss_conf margin=0.2 scale=30    additive-margin softmax
  --crop_seconds 2.0

The keys each *_conf accepts, and the values of those it leaves out, are the keyword arguments
of what it configures (FbankConfig, ThinResNetGhostVLAD, SpeakerEmbeddingModel), as ESPnet's tasks
take theirs (``get_default_kwargs``).
"""

from __future__ import annotations

import argparse
from typing import Callable, Collection, Dict, List, Optional, Tuple

import numpy as np
import torch
from espnet2.tasks.abs_task import AbsTask
from espnet2.train.collate_fn import CommonCollateFn
from espnet2.train.trainer import Trainer
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import int_or_none

from espnet_probe.audio.features import FbankConfig
from espnet_probe.speaker.resnet import (ENCODER_DEFAULTS, SpeakerEmbeddingModel, build_encoder,
                                         fbank_config, repeat_pad)
from espnet_probe.utils.conf import checked_conf, conf_defaults

LOSS_DEFAULTS = conf_defaults(SpeakerEmbeddingModel)  # margin, scale


class CropSpeech:
    """Preprocessing: a fixed-length window of ``speech`` (random in training, else centred)."""

    def __init__(self, num_samples: int, random: bool):
        self.num_samples = num_samples
        self.random = random

    def __call__(self, uid: str, data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        wav = np.asarray(data["speech"], dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"utterance '{uid}': expected mono audio, got shape {wav.shape}")
        if wav.size <= self.num_samples:
            wav = repeat_pad(wav, self.num_samples)
        else:
            spare = wav.size - self.num_samples
            # np.random: ESPnet reseeds it every epoch, so a resumed run crops the same way
            start = np.random.randint(spare + 1) if self.random else spare // 2
            wav = wav[start:start + self.num_samples]
        return {**data, "speech": wav}


class SpeakerTask(AbsTask):
    num_optimizers: int = 1
    class_choices_list = []
    trainer = Trainer

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Speaker encoder related")
        group.add_argument("--num_spk", type=int_or_none, default=None,
                           help="number of training speakers (speaker_train sets it from spk2id)")
        group.add_argument("--frontend_conf", action=NestedDictAction, default={"n_mels": 64},
                           help="log-mel front end: FbankConfig fields (n_mels, fmin, fmax, ...)")
        group.add_argument("--encoder_conf", action=NestedDictAction, default=dict(ENCODER_DEFAULTS),
                           help=f"ThinResNet + GhostVLAD options: {sorted(ENCODER_DEFAULTS)}")
        group.add_argument("--loss_conf", action=NestedDictAction, default=dict(LOSS_DEFAULTS),
                           help="additive-margin softmax: margin, scale")
        group.add_argument("--crop_seconds", type=float, default=2.0,
                           help="length of the training / validation windows")

    @classmethod
    def build_collate_fn(cls, args: argparse.Namespace, train: bool
                         ) -> Callable[[Collection[Tuple[str, Dict[str, np.ndarray]]]],
                                       Tuple[List[str], Dict[str, torch.Tensor]]]:
        return CommonCollateFn(float_pad_value=0.0, int_pad_value=-1, not_sequence=["spk_labels"])

    @classmethod
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool
                            ) -> Optional[Callable[[str, Dict[str, np.ndarray]], Dict[str, np.ndarray]]]:
        fbank = cls.fbank_config(args)
        if args.crop_seconds * fbank.sample_rate <= fbank.n_fft:
            raise ValueError(f"--crop_seconds {args.crop_seconds} is shorter than one FFT window")
        return CropSpeech(int(round(args.crop_seconds * fbank.sample_rate)), random=train)

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("speech",) if inference else ("speech", "spk_labels")

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ()

    @staticmethod
    def fbank_config(args: argparse.Namespace) -> FbankConfig:
        return fbank_config(args.frontend_conf)

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> SpeakerEmbeddingModel:
        if not args.num_spk:
            raise ValueError("the speaker task needs --num_spk (speaker_train sets it from the "
                             "training data's spk2id)")
        encoder = build_encoder(args.frontend_conf, args.encoder_conf)
        return SpeakerEmbeddingModel(encoder, args.num_spk,
                                     **checked_conf("loss_conf", args.loss_conf, LOSS_DEFAULTS))
