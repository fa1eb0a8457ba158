"""The hidden layers behind ESPnet's s3prl frontend (``frontend: s3prl``), and their timing.

S3prlFrontend gives ESPnet one tensor: a learnt weighted sum of every hidden state its s3prl
upstream returns (or one of them). A probe wants each hidden state as well, so
:func:`s3prl_frontend_layers` runs the frontend's own upstream once and its own featurizer on
that output, the steps of ``S3prlFrontend.forward``: the frontend's output comes back exactly,
beside the layers it was made from. :func:`s3prl_timing` says where the upstream's frames sit
in the waveform, measured on the upstream's convolutions.

s3prl 0.4.18 does not import beside torchaudio >= 2.9 (it calls the removed
``torchaudio.set_audio_backend`` and imports the removed ``torchaudio.sox_effects`` at import
time, for upstreams we do not use), and tools/install.sh installs it without transformers
(with it, every ESPnet process starts ~2 s slower): :func:`s3prl_import_hooks` gives it both
names back and stands in for the two HuggingFace-hosted upstreams.
"""

from __future__ import annotations

import sys
import types

import torch

from espnet_probe.asr.conv_timing import conv_stack_timing
from espnet_probe.families import UnsupportedFamily
from espnet_probe.utils.offline import hook_import

UpstreamLayer = tuple[str, torch.Tensor, torch.Tensor]  # (name, (B, T, D), lengths (B,) int64)


# ----------------------------------------------------------------------------- s3prl's import

def _sox_effects_removed(*args, **kwargs):
    import torchaudio

    raise RuntimeError(f"torchaudio {torchaudio.__version__} has no sox_effects (removed in "
                       "2.9); the s3prl upstream calling it needs torchaudio < 2.9")


def _set_audio_backend_is_gone(backend) -> None:
    """torchaudio >= 2.9 has one I/O path and no backend to choose: nothing to set."""


def _needs_transformers(name: str):
    def upstream(*args, **kwargs):
        raise ImportError(f"s3prl's {name} upstream needs transformers, which tools/install.sh "
                          "leaves out (ESPnet imports it at every start, ~2 s a process); "
                          "pip install transformers to use it")

    return upstream


def _exec_with_old_torchaudio_names(exec_module, module) -> None:
    import importlib.util

    import torchaudio

    if importlib.util.find_spec("transformers") is None:
        # the two HuggingFace-hosted upstreams import transformers; every other one works without
        for name in ("hf_hubert", "hf_wav2vec2"):
            stub = types.ModuleType(f"s3prl.upstream.{name}.hubconf", "Stand-in: needs transformers.")
            setattr(stub, f"{name}_custom", _needs_transformers(f"{name}_custom"))
            sys.modules[stub.__name__] = stub

    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = _set_audio_backend_is_gone
    try:
        import torchaudio.sox_effects  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torchaudio.sox_effects",
                                "Stand-in: removed in torchaudio 2.9; its functions raise.")
        stub.apply_effects_tensor = stub.apply_effects_file = _sox_effects_removed
        sys.modules[stub.__name__] = torchaudio.sox_effects = stub
    exec_module(module)


def s3prl_import_hooks() -> None:
    """Give torchaudio the two names s3prl needs (see the module docstring), and stand-ins for
    the two upstreams that need transformers when it is absent, just before ``s3prl.hub`` runs:
    it imports every upstream, the frontend imports it (``s3prl.nn``).  Not on ``s3prl``
    itself: ESPnet's trainer module imports that bare package early."""
    hook_import("s3prl.hub", _exec_with_old_torchaudio_names)


# ----------------------------------------------------------------------------- the layers

def _check_one_frame_rate(frontend) -> None:
    """Tiling would give the frontend's output another frame rate than the hidden states'."""
    tile = getattr(frontend, "tile_factor", 1)
    if tile != 1 and frontend.layer == -1:
        raise UnsupportedFamily(
            f"tile_factor {tile}: S3prlFrontend repeats each output frame {tile} times but keeps "
            "the upstream's frame lengths, so its output and the hidden states differ in rate")


def s3prl_frontend_layers(frontend, wave: torch.Tensor, lengths: torch.Tensor
                          ) -> tuple[list[UpstreamLayer], torch.Tensor, torch.Tensor]:
    """Every hidden state of the frontend's upstream, and what ``frontend(wave, lengths)``
    returns, from one upstream pass.

    Returns ``([("upstream<i>", hidden (B, T, D), lengths (B,) int64), ...], feats,
    feat_lengths)`` with the hidden states in the upstream's order (0 = before the first
    transformer layer for HuBERT / wav2vec 2.0) and feats / feat_lengths as S3prlFrontend makes
    them: its ``layer``, else the featurizer's weighted sum (``multilayer_feature``) or its last
    hidden state.
    """
    _check_one_frame_rate(frontend)
    hiddens, hidden_lengths = frontend.upstream(wave, lengths)
    layers = [(f"upstream{i}", h, n.to(torch.long))
              for i, (h, n) in enumerate(zip(hiddens, hidden_lengths))]
    if frontend.layer != -1:
        feats, feat_lengths = hiddens[frontend.layer], hidden_lengths[frontend.layer]
    elif frontend.multilayer_feature:
        feats, feat_lengths = frontend.featurizer(hiddens, hidden_lengths)
    else:
        feats, feat_lengths = frontend.featurizer(hiddens[-1:], hidden_lengths[-1:])
    if feats.size(1) != hiddens[0].size(1):
        raise UnsupportedFamily(f"the frontend's output has {feats.size(1)} frames, its "
                                  f"upstream's hidden states {hiddens[0].size(1)}")
    return layers, feats, feat_lengths


# ----------------------------------------------------------------------------- the timing

def s3prl_timing(frontend) -> tuple[int, float]:
    """(rate, start) in samples of the upstream's frames (= of the frontend's output), from the
    convolutions of its waveform encoder (espnet_probe.asr.conv_timing), checked against
    s3prl's own downsample rate (``get_downsample_rates``: 320 for HuBERT and wav2vec 2.0)."""
    _check_one_frame_rate(frontend)
    rates = set(frontend.upstream.downsample_rates)
    if len(rates) != 1:
        raise UnsupportedFamily(f"hidden states at different downsample rates {sorted(rates)}")
    expert = frontend.upstream.upstream
    extractor = getattr(getattr(expert, "model", None), "feature_extractor", None)
    if extractor is None:
        raise UnsupportedFamily(f"{type(expert).__module__}: no convolutional feature "
                                  "extractor at model.feature_extractor to time")
    rate, start = conv_stack_timing(extractor)
    if rate != rates.pop():
        raise UnsupportedFamily(f"{type(expert).__module__}: its convolutions step {rate} "
                                  f"samples, its downsample rate is {frontend.upstream.downsample_rates[0]}")
    return rate, start
