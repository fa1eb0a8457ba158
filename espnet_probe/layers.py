"""One interface to every named hidden layer of an ESPnet ASR model, ours or stock.

``extract_layers(model, speech, lengths)`` returns, in order, each layer's hidden states
(B, T_l, D_l) (zero beyond ``lengths``) beside its record (espnet_probe.layer_record.Layer),
which says *where in time* each frame sits:
``period`` (seconds per frame) and ``offset`` (the time at which frame 0's span starts; frame
j spans ``[offset + j * period, offset + (j + 1) * period)``), like s3prl's hidden_states +
downsample rates but in seconds, so models with different frontends (our 10 ms features,
ESPnet's STFT at hop 128 = 8 ms) can be mapped onto one target grid.  ``frame_rate`` is the
nominal number of the model's own input frames per layer frame.

``speech`` is what the model was trained on (``model_input``): a waveform batch (B, N) for a
model with a frontend (egs2 asr.sh's raw-waveform models), features (B, T, D) otherwise.  The
other kind is refused, never decoded.  Layer 0 is ``input``: the frontend's output after the
model's own normalisation (global_mvn / utterance_mvn), i.e. what the encoder saw.

Timing: input frames are centred (ours: T = 1 + samples // 160; ESPnet's STFT with
``center: true``), so input frame k spans one period around k * period.  Pooling and frame
skipping keep the span start (frame j of a rate-r layer spans input frames [j r, (j+1) r)).
ESPnet's convolutional subsampling centres output frame j on input frame ``r j + c``; ``c``
is measured from the module's receptive field (a gradient), not taken from a table, so every
input layer (conv2d, conv2d6, conv2d8, ...) is timed by the same rule.

Supported encoders:
  * ours (``vgg_blstm``, ``blstm``): their ``forward_layers``;
  * ESPnet's conformer / transformer / branchformer / e_branchformer (any encoder with
    ``embed`` + ``encoders``): forward hooks, layers ``subsample`` (when ``embed`` exists),
    ``block1``..``blockN`` (raw block outputs) and ``output`` (after the final LayerNorm,
    when the encoder has one);
  * ESPnet's ``rnn`` / ``vgg_rnn`` encoders: ``<type>1``..``<type>N`` (e.g. ``blstm1``), and
    ``output`` for the final projection of the un-projected variant.  Batches are run in
    descending length order (ESPnet packs with ``enforce_sorted``) and returned in the
    caller's order.
Frontends: ESPnet's ``default`` (STFT + log-mel) or none (features).

Batches behave as in ESPnet's own batched ``encode`` (the lengths it derives from its masks,
the same batched STFT), except that the normalised input and every layer are zero beyond each
utterance's length: ESPnet leaves utterance_mvn offsets in the padding, which convolution
modules (e_branchformer, branchformer) then read, so no value here depends on what fills it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import List, NamedTuple, Tuple, Union

import numpy as np
import torch

from espnet_probe.asr.blstm import EncoderLayer, zero_padding
from espnet_probe.asr.model_input import model_input
from espnet_probe.asr.register import register_encoders
from espnet_probe.asr.whisper import build_whisper, espnet_encoder_layers, is_espnet_whisper
from espnet_probe.layer_record import Layer
from espnet_probe.utils.checkpoint import CheckpointError, check_fits, load_state_dict

log = logging.getLogger(__name__)


class LayerStates(NamedTuple):
    """A layer's hidden states for a batch, beside its record."""

    layer: Layer
    hidden: torch.Tensor  # (B, T_l, D_l), zero beyond lengths
    lengths: torch.Tensor  # (B,) int64


def load_asr_model(
    config: Union[str, Path],
    checkpoint: Union[str, Path],
    device: str = "cpu",
) -> torch.nn.Module:
    """Build an ESPnet ASR model from its training ``config.yaml`` and a checkpoint.

    ``checkpoint`` may be a plain state dict (``valid.loss.best.pth``,
    ``N epoch.pth``) or a trainer ``checkpoint.pth`` (``{"model": ...}``), opened with
    tensors only (espnet_probe.utils.checkpoint).  Unlike ESPnet's loader, parameter names
    and shapes must match exactly.  The global_mvn
    statistics travel in the checkpoint, so a moved or deleted stats file
    (config.yaml keeps the path used in training) is not needed.
    """
    import argparse

    import yaml
    from espnet2.tasks.asr import ASRTask

    register_encoders()
    config, checkpoint = Path(config), Path(checkpoint)
    for what, path in (("config", config), ("checkpoint", checkpoint)):
        if not path.is_file():
            raise FileNotFoundError(f"ASR {what} not found: {path}")
    with config.open(encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    if not isinstance(conf, dict):
        raise CheckpointError(f"{config}: not an ESPnet training config (no mapping)")
    state = load_state_dict(checkpoint, map_location=device)
    if conf.get("model_family") == "whisper":  # brought Whisper (espnet_probe.asr.whisper)
        return build_whisper(conf["whisper"]["dims"], state, checkpoint).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        _stand_in_stats(conf, state, config, Path(tmp))
        try:
            model = ASRTask.build_model(argparse.Namespace(**conf)).to(device)
        except (AttributeError, KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{config}: ESPnet cannot build an ASR model from it "
                                  f"({type(e).__name__}: {e})") from None
    check_fits(model, state, checkpoint, config)
    model.eval()
    return model


def _stand_in_stats(conf: dict, state: dict, config: Path, tmp: Path) -> None:
    """If global_mvn's stats file is gone, build from the checkpoint's own mean/std."""
    if conf.get("normalize") != "global_mvn":
        return
    norm_conf = dict(conf.get("normalize_conf") or {})
    stats = norm_conf.get("stats_file")
    if stats is not None and Path(stats).is_file():
        return
    if "normalize.mean" not in state or "normalize.std" not in state:
        raise FileNotFoundError(
            f"{config}: normalize_conf.stats_file {stats!r} does not exist and the "
            "checkpoint has no normalize.mean/std to stand in for it"
        )
    log.info("stats file %s not found; global_mvn statistics come from the checkpoint", stats)
    mean = state["normalize.mean"].double().cpu().numpy()
    std = state["normalize.std"].double().cpu().numpy()
    path = tmp / "feats_stats.npz"
    np.savez(path, count=np.array(1.0), sum=mean, sum_square=std**2 + mean**2)
    norm_conf["stats_file"] = str(path)
    conf["normalize_conf"] = norm_conf


@torch.no_grad()
def extract_layers(
    model: torch.nn.Module, speech: torch.Tensor, lengths: torch.Tensor,
    feature_period: float = 0.01,
) -> List[LayerStates]:
    """Every hidden layer of ``model``'s encoder for a padded batch of what it was trained on.

    ``speech``: waveforms (B, N) for a model with a frontend, features (B, T, D) as stored in
    the ark otherwise (``model_input``); the model applies its own frontend and
    normalisation.  The model runs in eval mode (no SpecAugment, no dropout); its previous
    mode is restored.
    """
    spec = model_input(model, feature_period)
    spec.check(speech)
    lengths = torch.as_tensor(lengths, dtype=torch.long, device=speech.device)
    if lengths.shape != (speech.size(0),):
        raise ValueError(f"lengths must be ({speech.size(0)},), got {tuple(lengths.shape)}")
    if int(lengths.min()) < 1 or int(lengths.max()) > speech.size(1):
        raise ValueError(
            f"lengths must lie in 1..{speech.size(1)}, got {lengths.tolist()}"
        )
    # descending lengths: ESPnet's rnn encoder packs with enforce_sorted=True
    order = torch.argsort(lengths, descending=True, stable=True)
    restore = torch.argsort(order)
    in_order = bool((order == torch.arange(order.numel(), device=order.device)).all())
    was_training = model.training
    model.eval()
    try:
        # clone: ESPnet's global_mvn normalises in place and would alter the caller's batch
        feats = speech[order, : int(lengths.max())].clone()  # copies even when in order
        lengths = lengths[order]
        if hasattr(model, "layer_outputs"):  # a model that computes its own layers (Whisper)
            outs = model.layer_outputs(feats, lengths)
        else:
            outs = _espnet_layer_outputs(model, feats, lengths)
        layers = []
        for name, hidden, out_lengths, rate, start in outs:
            hidden = zero_padding(hidden, out_lengths)
            if not in_order:  # ESPnet's batches come longest first: usually nothing to undo
                hidden, out_lengths = hidden[restore], out_lengths[restore]
            layer = Layer(name, len(layers), int(hidden.size(-1)), int(rate),
                          period=spec.period * rate, offset=spec.offset + spec.period * start)
            layers.append(LayerStates(layer, hidden, out_lengths))
        return layers
    finally:
        model.train(was_training)


def _espnet_layer_outputs(model, feats: torch.Tensor, lengths: torch.Tensor) -> List[EncoderLayer]:
    """An ESPnet ASR model's layers: its frontend and normalisation (``input``), pre-encoder,
    then the encoder's; ESPnet's Whisper encoder computes its own input from the waveform."""
    if is_espnet_whisper(model.encoder):
        parts = [p for p in ("frontend", "normalize", "preencoder") if getattr(model, p, None) is not None]
        if parts:
            raise NotImplementedError(f"ESPnet's Whisper encoder behind a {' and '.join(parts)}: it "
                                      "takes the raw waveform (frontend: null, normalize: null)")
        return espnet_encoder_layers(model.encoder, feats, lengths)
    if getattr(model, "frontend", None) is not None:
        feats, lengths = model.frontend(feats, lengths)
    if getattr(model, "normalize", None) is not None:
        feats, lengths = model.normalize(feats, lengths)
    feats = zero_padding(feats, lengths)
    outs = [("input", feats, lengths, 1, 0.0)]
    if getattr(model, "preencoder", None) is not None:
        pre, new_lengths = model.preencoder(feats, lengths)
        if not torch.equal(new_lengths, lengths):
            raise NotImplementedError("a pre-encoder that changes the frame rate")
        outs.append(("preencoder", pre, lengths, 1, 0.0))
        feats = pre
    return outs + encoder_layers(model.encoder, feats, lengths)


def encoder_layers(
    encoder: torch.nn.Module, feats: torch.Tensor, lengths: torch.Tensor
) -> List[EncoderLayer]:
    """Every layer of an encoder given normalised features (no ``input`` layer).

    Stock encoders may leave junk beyond ``lengths``; ``extract_layers`` zeroes it.
    """
    if hasattr(encoder, "forward_layers"):
        return list(encoder.forward_layers(feats, lengths))
    name = type(encoder).__name__
    if name in ("RNNEncoder", "VGGRNNEncoder"):
        return _rnn_layers(encoder, feats, lengths)
    if hasattr(encoder, "encoders"):
        return _block_layers(encoder, feats, lengths)
    raise NotImplementedError(
        f"cannot list the layers of encoder {type(encoder).__module__}.{name}; supported: "
        "encoders with forward_layers (vgg_blstm, blstm), rnn, and transformer-style "
        "encoders with .embed/.encoders (conformer, transformer, branchformer, e_branchformer)"
    )


def _split_output(out):
    """(x, mask) / ((x, pos_emb), mask) / (x, pos_emb) / x  ->  (x, mask or None)."""
    if isinstance(out, torch.Tensor):
        return out, None
    first = out[0]
    x = first[0] if isinstance(first, (tuple, list)) else first
    mask = None
    if len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].dtype == torch.bool:
        mask = out[1]
    return x, mask


def _mask_lengths(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, T) or (B, T) bool mask -> (B,) lengths."""
    return mask.reshape(mask.size(0), -1).sum(-1).long()


def _block_layers(encoder, feats, lengths) -> List[EncoderLayer]:
    captured = []

    def hook(name):
        def fn(module, inputs, output):
            captured.append((name, _split_output(output)))

        return fn

    handles = []
    embed = getattr(encoder, "embed", None)
    if embed is not None:
        handles.append(embed.register_forward_hook(hook("subsample")))
    for i, block in enumerate(encoder.encoders):
        handles.append(block.register_forward_hook(hook(f"block{i + 1}")))
    try:
        out, olens, _ = encoder(feats, lengths)
    finally:
        for h in handles:
            h.remove()
    if isinstance(out, tuple):  # intermediate-CTC encoders return (out, inters)
        out = out[0]

    embed_rate, embed_start = 1, 0.0
    if embed is not None and captured:
        embed_rate, embed_start = embed_timing(embed, feats.size(-1), feats.device)

    layers: List[EncoderLayer] = []
    cur_lengths = lengths
    for name, (x, mask) in captured:
        if mask is not None:
            cur_lengths = _mask_lengths(mask)
        layers.append((name, x, cur_lengths, embed_rate, embed_start))
    expected = len(encoder.encoders) + (embed is not None)
    if len(captured) != expected:
        raise RuntimeError(
            f"{type(encoder).__name__}: captured {len(captured)} layer outputs, expected {expected}"
        )
    # the final LayerNorm: conformer/transformer only with normalize_before, e_branchformer and
    # branchformer always
    if hasattr(encoder, "after_norm") and getattr(encoder, "normalize_before", True):
        layers.append(("output", out, olens.long(), embed_rate, embed_start))
    return layers


def embed_timing(embed: torch.nn.Module, dim: int, device=None, frames: int = 96) -> Tuple[int, float]:
    """(rate, start) of an input layer, measured: which input frames reach output frames 2 and 3.

    ``rate`` is the step between the two outputs' receptive fields, ``start`` where output
    frame 0's span begins (input frames): centred on its receptive field's centre.  Measured
    once per module (cached on it); a layer whose outputs do not depend on its inputs locally
    (no receptive field) is refused.
    """
    cached = getattr(embed, "_probe_timing", None)
    if cached is not None and cached[0] == dim:
        return cached[1]
    x = torch.randn(1, frames, dim, device=device, requires_grad=True)
    mask = torch.ones(1, 1, frames, dtype=torch.bool, device=device)
    was_training = embed.training
    embed.eval()
    try:
        with torch.enable_grad():
            try:
                out = embed(x, mask)
            except TypeError:  # Linear / Sequential input layers take no mask
                out = embed(x)
            y, _ = _split_output(out)
            centres = []
            for j in (2, 3):
                (grad,) = torch.autograd.grad(y[0, j].sum(), x, retain_graph=True)
                reached = grad.abs().sum(-1)[0].nonzero().flatten()
                if reached.numel() == 0:
                    raise RuntimeError(f"{type(embed).__name__}: output frame {j} depends on no input frame")
                centres.append((float(reached.min()) + float(reached.max())) / 2)
    finally:
        embed.train(was_training)
    rate = centres[1] - centres[0]
    if rate < 1 or rate != int(rate):
        raise NotImplementedError(f"{type(embed).__name__}: input layer with a step of {rate} frames")
    rate = int(rate)
    centre0 = centres[0] - 2 * rate
    timing = (rate, centre0 + 0.5 - rate / 2)
    embed._probe_timing = (dim, timing)
    return timing


def _rnn_layers(encoder, feats, lengths) -> List[EncoderLayer]:
    """ESPnet's RNNEncoder / VGGRNNEncoder: [VGG2L,] RNNP (projection per layer) or RNN."""
    modules = list(encoder.enc)
    layers: List[EncoderLayer] = []
    rate = 1
    if modules and type(modules[0]).__name__ == "VGG2L":
        x, lengths, _ = modules[0](feats, lengths)
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=feats.device)
        rate = 4  # two ceil-mode 2x2 max-pools
        layers.append(("vgg", x, lengths, rate, 0.0))
        feats, modules = x, modules[1:]
    if len(modules) != 1:
        raise NotImplementedError(f"{type(encoder).__name__} with {len(encoder.enc)} enc modules")
    module = modules[0]
    if type(module).__name__ == "RNNP":
        return layers + _rnnp_layers(module, feats, lengths, rate)
    return layers + _rnn_stack_layers(module, feats, lengths, rate)


def _rnnp_layers(rnnp, feats, lengths, rate) -> List[EncoderLayer]:
    projected = []
    handles = [
        getattr(rnnp, f"bt{i}").register_forward_hook(lambda m, i, o: projected.append(o))
        for i in range(rnnp.elayers)
    ]
    try:
        rnnp(feats, lengths)
    finally:
        for h in handles:
            h.remove()
    layers: List[EncoderLayer] = []
    b = feats.size(0)
    for i, flat in enumerate(projected):
        sub = int(rnnp.subsample[i + 1])
        if sub > 1:
            # the same length rule RNNP applies (it subsamples before the projection)
            lengths = torch.div(lengths + 1, sub, rounding_mode="floor")
            rate *= sub
        x = flat.view(b, -1, flat.size(-1))
        if i < rnnp.elayers - 1:
            x = torch.tanh(x)  # RNNP applies tanh (and dropout) before the next layer
        layers.append((f"{rnnp.typ}{i + 1}", x, lengths, rate, 0.0))
    return layers


def _rnn_stack_layers(rnn, feats, lengths, rate) -> List[EncoderLayer]:
    """Re-run a multi-layer torch RNN one layer at a time with its own weights."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    full = rnn.nbrnn
    layers: List[EncoderLayer] = []
    x = feats
    for k in range(full.num_layers):
        single = type(full)(
            x.size(-1), full.hidden_size, num_layers=1, batch_first=True,
            bidirectional=full.bidirectional,
        ).to(device=feats.device, dtype=feats.dtype)
        weights = {}
        for name, _ in single.named_parameters():
            weights[name] = getattr(full, name.replace("_l0", f"_l{k}"))
        single.load_state_dict(weights)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        ys, _ = single(packed)
        x, _ = pad_packed_sequence(ys, batch_first=True, total_length=x.size(1))
        layers.append((f"{rnn.typ}{k + 1}", x, lengths, rate, 0.0))
    out = torch.tanh(rnn.l_last(x))
    layers.append(("output", out, lengths, rate, 0.0))
    return layers


def layer_table(layers: List[LayerStates]) -> str:
    """Human-readable summary, one line per layer (frames: of the batch's first utterance)."""
    rows = [f"{'idx':>3} {'name':<12} {'frames':>7} {'dim':>6} {'rate':>4} {'period_ms':>9} {'offset_ms':>9}"]
    for layer, hidden, _ in layers:
        rows.append(
            f"{layer.index:>3} {layer.name:<12} {hidden.size(1):>7} "
            f"{layer.dim:>6} {layer.frame_rate:>4} {layer.period * 1e3:>9.3g} "
            f"{layer.offset * 1e3:>9.3g}"
        )
    return "\n".join(rows)
