"""Tiny, randomly initialised SSL upstreams for ESPnet's s3prl frontend, written offline.

Not a test module: a helper tests import (``from ssl_upstream import ...``), like stock_models.
Each writer builds the model from its config with s3prl's own classes and saves it as s3prl's
local loaders read a converted fairseq checkpoint (``upstream: hubert_local`` /
``wav2vec2_local``, ``path_or_url: <file>``):

    {"task_cfg": {...}, "model_cfg": {...}, "model_weight": state_dict,
     "dictionaries_symbols": [[...]]}          (the last key: HuBERT only)

Plain dicts, lists and tensors only, so s3prl's ``torch.load`` (weights_only by default since
torch 2.6) opens it. The configs keep the real models' waveform encoder geometry (kernels 10, 3 x 4,
2 x 2, strides 5, 2 x 6: 320 samples per frame, 400 in a receptive field) at 32 channels, and two
transformer layers of width 32 with two heads: three hidden states per upstream, ~40 k weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

import espnet_probe  # noqa: F401  (its import hooks let s3prl 0.4.18 import beside torchaudio >= 2.9)


CONV_LAYERS = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"
_TINY = {"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
         "encoder_attention_heads": 2, "conv_feature_layers": CONV_LAYERS,
         "conv_pos": 16, "conv_pos_groups": 4, "final_dim": 16}

# HuBERT Base's layout (GroupNorm extractor, post-norm transformer), 8 cluster labels
TINY_HUBERT = {**_TINY, "label_rate": 50.0, "extractor_mode": "default", "layer_norm_first": False}
HUBERT_SYMBOLS = [["<s>", "<pad>", "</s>", "<unk>", *map(str, range(8))]]
# wav2vec 2.0 Large's layout (LayerNorm extractor, pre-norm transformer), a 2 x 8 codebook
TINY_WAV2VEC2 = {**_TINY, "extractor_mode": "layer_norm", "layer_norm_first": True,
                 "quantize_targets": True, "latent_vars": 8, "latent_groups": 2}


def _write(path: Path, seed: int, build) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        state = build()
    torch.save(state, path)
    return path


def write_tiny_hubert(path: Path, seed: int = 0) -> Path:
    """A random tiny HuBERT as ``hubert_local`` reads it (s3prl's convert.py layout)."""
    from s3prl.upstream.hubert.hubert_model import (HubertConfig, HubertModel,
                                                    HubertPretrainingConfig)

    def build():
        model_cfg = HubertConfig(**TINY_HUBERT)
        task_cfg = HubertPretrainingConfig(label_rate=TINY_HUBERT["label_rate"], sample_rate=16000)
        model = HubertModel(model_cfg, task_cfg, HUBERT_SYMBOLS)
        return {"task_cfg": {"_name": "hubert_pretraining", **dataclasses.asdict(task_cfg)},
                "model_cfg": {"_name": "hubert", **dataclasses.asdict(model_cfg)},
                "model_weight": model.state_dict(),
                "dictionaries_symbols": HUBERT_SYMBOLS}

    return _write(path, seed, build)


def write_tiny_wav2vec2(path: Path, seed: int = 0) -> Path:
    """A random tiny wav2vec 2.0 as ``wav2vec2_local`` reads it (s3prl's convert.py layout)."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import (AudioPretrainingConfig, Wav2Vec2Config,
                                                        Wav2Vec2Model)

    def build():
        model_cfg = Wav2Vec2Config(**TINY_WAV2VEC2)
        task_cfg = AudioPretrainingConfig(sample_rate=16000, normalize=True)
        model = Wav2Vec2Model(model_cfg)
        return {"task_cfg": {"_name": "audio_pretraining", **dataclasses.asdict(task_cfg)},
                "model_cfg": {"_name": "wav2vec2", **dataclasses.asdict(model_cfg)},
                "model_weight": model.state_dict()}

    return _write(path, seed, build)


def s3prl_frontend_conf(ckpt: Path, upstream: str = "hubert_local") -> dict:
    """ESPnet's ``frontend_conf`` for ``frontend: s3prl`` on a local checkpoint: a ``*_local``
    upstream and an absolute path is all it takes for s3prl to download nothing."""
    return {"frontend_conf": {"upstream": upstream, "path_or_url": str(Path(ckpt).resolve())},
            "multilayer_feature": True}


def tiny_asr_config(ckpt: Path, upstream: str = "hubert_local") -> dict:
    """An ESPnet ASR training config (as YAML would hold it) on the s3prl frontend: a one-block
    conformer (conv2d, 4x fewer frames), CTC only, per-utterance mean/variance normalisation."""
    return {
        "frontend": "s3prl",
        "frontend_conf": s3prl_frontend_conf(ckpt, upstream),
        "specaug": None,
        "normalize": "utterance_mvn",
        "encoder": "conformer",
        "encoder_conf": {"output_size": 32, "attention_heads": 2, "linear_units": 64,
                         "num_blocks": 1, "input_layer": "conv2d", "dropout_rate": 0.0,
                         "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0,
                         "cnn_module_kernel": 7},
        "decoder": None,
        "model_conf": {"ctc_weight": 1.0},
    }
