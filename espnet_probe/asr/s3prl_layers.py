"""The hidden layers behind ESPnet's s3prl frontend (``frontend: s3prl``), and their timing.

S3prlFrontend gives ESPnet one tensor: a learnt weighted sum of every hidden state its s3prl
upstream returns (or one of them). A probe wants each hidden state as well, so
:func:`s3prl_frontend_layers` runs the frontend's own upstream once and its own featurizer on
that output, the steps of ``S3prlFrontend.forward``: the frontend's output comes back exactly,
beside the layers it was made from. :func:`s3prl_timing` says where the upstream's frames sit
in the waveform, measured on the upstream's convolutions.

s3prl 0.4.18 does not import beside torchaudio >= 2.9 (it calls the removed
``torchaudio.set_audio_backend`` and imports the removed ``torchaudio.sox_effects`` at import
time, for upstreams we do not use): :func:`patch_torchaudio_for_s3prl` is the import hook that
gives it both names back.
"""

from __future__ import annotations

import sys
import types
import torch

from espnet_probe.utils.offline import hook_import

UpstreamLayer = tuple[str, torch.Tensor, torch.Tensor]  # (name, (B, T, D), lengths (B,) int64)


# ----------------------------------------------------------------------------- s3prl's import

def _sox_effects_removed(*args, **kwargs):
    import torchaudio

    raise RuntimeError(f"torchaudio {torchaudio.__version__} has no sox_effects (removed in "
                       "2.9); the s3prl upstream calling it needs torchaudio < 2.9")


def _set_audio_backend_is_gone(backend) -> None:
    """torchaudio >= 2.9 has one I/O path and no backend to choose: nothing to set."""


def _exec_with_old_torchaudio_names(exec_module, module) -> None:
    import torchaudio

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


def patch_torchaudio_for_s3prl() -> None:
    """Give torchaudio the two names s3prl needs (see the module docstring) just before
    ``s3prl.hub`` runs: it imports every upstream, the frontend imports it (``s3prl.nn``).
    Not on ``s3prl`` itself: ESPnet's trainer module imports that bare package early."""
    hook_import("s3prl.hub", _exec_with_old_torchaudio_names)


# ----------------------------------------------------------------------------- the layers

def _check_one_frame_rate(frontend) -> None:
    """Tiling would give the frontend's output another frame rate than the hidden states'."""
    tile = getattr(frontend, "tile_factor", 1)
    if tile != 1 and frontend.layer == -1:
        raise NotImplementedError(
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
        raise NotImplementedError(f"the frontend's output has {feats.size(1)} frames, its "
                                  f"upstream's hidden states {hiddens[0].size(1)}")
    return layers, feats, feat_lengths


# ----------------------------------------------------------------------------- the timing

def _feature_convs(frontend) -> list[torch.nn.Conv1d]:
    """The Conv1d chain of the upstream's waveform encoder (fairseq's ConvFeatureExtractionModel,
    at ``upstream.upstream.model.feature_extractor`` in s3prl's HuBERT / wav2vec 2.0 experts)."""
    expert = frontend.upstream.upstream
    extractor = getattr(getattr(expert, "model", None), "feature_extractor", None)
    convs = ([] if extractor is None else
             [m for m in extractor.modules() if isinstance(m, torch.nn.Conv1d)])
    if not convs:
        raise NotImplementedError(f"{type(expert).__module__}: no convolutional feature "
                                  "extractor at model.feature_extractor to time")
    channels = 1
    for conv in convs:
        if conv.in_channels != channels or conv.padding_mode != "zeros":
            raise NotImplementedError(f"{type(extractor).__name__}: its convolutions are not one "
                                      "zero-padded chain from the waveform")
        channels = conv.out_channels
    return convs


def _spans(convs, samples: int) -> tuple[int, int, list[tuple[int, int]]]:
    """(output frames, j, [(first, last) input sample reaching frame j, and frame j + 1]) of the
    chain on ``samples`` samples, j its middle frame (gradients on, whatever the caller's mode)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.zeros(1, 1, samples, dtype=torch.float64, requires_grad=True)
        y = x
        for conv in convs:
            kernel = torch.ones(conv.weight.shape, dtype=torch.float64) / conv.weight[0].numel()
            y = torch.nn.functional.conv1d(y, kernel, None, conv.stride, conv.padding,
                                           conv.dilation, conv.groups)
        frames = y.size(-1)
        j = frames // 2
        spans = []
        for frame in (j, j + 1)[:max(0, frames - j)]:
            (grad,) = torch.autograd.grad(y[0, :, frame].sum(), x, retain_graph=True)
            reached = grad[0, 0].nonzero().flatten()
            spans.append((int(reached.min()), int(reached.max())))
    return frames, j, spans


def s3prl_timing(frontend) -> tuple[int, float]:
    """(rate, start) in samples of the upstream's frames (= of the frontend's output).

    ``rate`` is the upstream's downsample rate (s3prl's ``get_downsample_rates``: 320 for HuBERT
    and wav2vec 2.0). ``start`` is where frame 0's span begins: frame j is centred on its
    receptive field's centre and spans one rate around it, measured with a gradient through the
    feature extractor's convolutions alone, all-ones kernels with their strides, padding and
    dilation. Alone, because fairseq's "default" extractor GroupNorms each channel over the
    whole utterance, so every frame depends on every sample; the convolutions say which
    samples a frame is made of. Measured on a frame far from both ends, cached on the frontend.
    """
    _check_one_frame_rate(frontend)
    cached = getattr(frontend, "_probe_s3prl_timing", None)
    if cached is not None:
        return cached
    rates = set(frontend.upstream.downsample_rates)
    if len(rates) != 1:
        raise NotImplementedError(f"hidden states at different downsample rates {sorted(rates)}")
    rate = int(rates.pop())
    convs = _feature_convs(frontend)
    where = type(frontend.upstream.upstream).__module__
    samples = 16 * rate
    while True:  # until frames j and j + 1 are clear of both ends (no padding in their view)
        try:
            frames, j, spans = _spans(convs, samples)
        except RuntimeError:  # fewer samples than one receptive field
            frames = 0
        if frames >= 4 and spans[0][0] > 0 and spans[1][1] < samples - 1:
            break
        if samples > 1 << 22:
            raise NotImplementedError(f"{where}: no frame clear of the ends of {samples} samples")
        samples *= 2
    centre, centre_next = ((first + last) / 2 + 0.5 for first, last in spans)  # sample i: [i, i+1)
    if centre_next - centre != rate:
        raise NotImplementedError(f"{where}: its convolutions step {centre_next - centre} "
                                  f"samples, its downsample rate is {rate}")
    timing = (rate, centre - j * rate - rate / 2)
    frontend._probe_s3prl_timing = timing
    return timing
