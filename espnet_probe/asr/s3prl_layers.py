"""The hidden layers behind ESPnet's s3prl frontend (``frontend: s3prl``), and their timing.

S3prlFrontend gives ESPnet one tensor: a learnt weighted sum of every hidden state its s3prl
upstream returns (or one of them). A probe wants each hidden state as well, so
:func:`s3prl_frontend_layers` runs the frontend's own upstream once and its own featurizer on
that output, the steps of ``S3prlFrontend.forward``: the frontend's output comes back exactly,
beside the layers it was made from. :func:`s3prl_timing` says where the upstream's frames sit
in the waveform, measured on the upstream's convolutions.

s3prl imports only through the hooks of espnet_probe.asr.s3prl_offline (installed on import of
espnet_probe).
"""

from __future__ import annotations

import torch

from espnet_probe.asr.conv_timing import conv_stack_timing
from espnet_probe.families import UnsupportedFamily

UpstreamLayer = tuple[str, torch.Tensor, torch.Tensor]  # (name, (B, T, D), lengths (B,) int64)


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
