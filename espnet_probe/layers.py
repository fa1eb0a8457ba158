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

Which modules are layers, what their outputs hold and how each family is collected is the
layer map, ``espnet_probe/families.py``: one entry per encoder family (ours through their
``forward_layers``; ESPnet's transformer-style encoders through hooks on ``embed`` and
``encoders``, contextual-block ones stitched back onto the timeline; ESPnet's rnn / vgg_rnn
re-run a layer at a time, in descending length order as ESPnet packs them; ESPnet's Whisper
encoder utterance by utterance) and per frontend (none, ESPnet's ``default`` STFT, ``s3prl``).
An encoder or frontend without an entry is refused with the list of supported ones.

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
from espnet_probe.asr.conv_timing import conv_stack_timing
from espnet_probe.asr.model_input import model_input
from espnet_probe.asr.register import register_encoders
from espnet_probe.asr.s3prl_layers import s3prl_frontend_layers, s3prl_timing
from espnet_probe.asr.whisper import build_whisper, espnet_encoder_layers
from espnet_probe.families import BLOCKS, Hook, UnsupportedFamily, class_path, family_of, frontend_of
from espnet_probe.layer_record import Layer
from espnet_probe.utils.checkpoint import CheckpointError, check_fits, load_state_dict
from espnet_probe.utils.yaml_io import load_yaml

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

    from espnet2.tasks.asr import ASRTask

    register_encoders()
    config, checkpoint = Path(config), Path(checkpoint)
    for what, path in (("config", config), ("checkpoint", checkpoint)):
        if not path.is_file():
            raise FileNotFoundError(f"ASR {what} not found: {path}")
    with config.open(encoding="utf-8") as f:
        conf = load_yaml(f)
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
    """An ESPnet ASR model's layers: what its frontend gives (``input`` after normalisation;
    for an s3prl frontend every upstream layer, then ``weighted_sum``, the frontend's output
    after normalisation), its pre-encoder, then the encoder's, each as the layer map
    (families.py) says."""
    family = family_of(model.encoder)
    if family.takes_wave:
        parts = [p for p in ("frontend", "normalize", "preencoder") if getattr(model, p, None) is not None]
        if parts:
            raise UnsupportedFamily(f"ESPnet's {family.name} encoder behind a {' and '.join(parts)}: "
                                    "it takes the raw waveform (frontend: null, normalize: null)")
        return encoder_layers(model.encoder, feats, lengths)
    frontend = getattr(model, "frontend", None)
    outs: List[EncoderLayer] = []
    rate, start, input_name = 1, 0.0, "input"  # the encoder input frames, in the model's input frames
    if frontend_of(frontend).collect == "s3prl":
        upstream, feats, lengths = s3prl_frontend_layers(frontend, feats, lengths)
        rate, start = s3prl_timing(frontend)
        outs += [(name, hidden, n, rate, start) for name, hidden, n in upstream]
        input_name = "weighted_sum"  # the frontend's output: the upstream layers, weighted
    elif frontend is not None:
        feats, lengths = frontend(feats, lengths)
    if getattr(model, "normalize", None) is not None:
        feats, lengths = model.normalize(feats, lengths)
    feats = zero_padding(feats, lengths)
    outs.append((input_name, feats, lengths, rate, start))
    if getattr(model, "preencoder", None) is not None:
        pre, new_lengths = model.preencoder(feats, lengths)
        if not torch.equal(new_lengths, lengths):
            raise UnsupportedFamily("a pre-encoder that changes the frame rate is not supported")
        outs.append(("preencoder", pre, lengths, rate, start))
        feats = pre
    # an encoder frame j spans its input frames [s + j r, s + (j + 1) r)
    return outs + [(name, hidden, n, rate * r, start + rate * s)
                   for name, hidden, n, r, s in encoder_layers(model.encoder, feats, lengths)]


def encoder_layers(
    encoder: torch.nn.Module, feats: torch.Tensor, lengths: torch.Tensor
) -> List[EncoderLayer]:
    """Every layer of an encoder given normalised features (no ``input`` layer), collected as
    its entry in the layer map says; an encoder without one is refused, never guessed.

    Stock encoders may leave junk beyond ``lengths``; ``extract_layers`` zeroes it.
    """
    family = family_of(encoder)
    collect = _COLLECTORS[family.collect]
    if not family.one_utterance or feats.size(0) == 1:
        return collect(encoder, family, feats, lengths)
    per_utt = [collect(encoder, family, feats[b:b + 1, : int(lengths[b])], lengths[b:b + 1])
               for b in range(feats.size(0))]
    return [_stack_utterances([u[i] for u in per_utt]) for i in range(len(per_utt[0]))]


def _stack_utterances(parts: List[EncoderLayer]) -> EncoderLayer:
    """One layer of a batch from each utterance's own (name, (1, T_b, D), (1,), rate, start)."""
    name, _, _, rate, start = parts[0]
    lens = torch.cat([p[2] for p in parts]).long()
    first = parts[0][1]
    hidden = first.new_zeros(len(parts), int(lens.max()), first.size(-1))
    for b, (_, x, n, *_) in enumerate(parts):
        hidden[b, : int(n)] = x[0, : int(n)]
    return name, hidden, lens, rate, start


def _own_layers(encoder, family, feats, lengths) -> List[EncoderLayer]:
    return list(encoder.forward_layers(feats, lengths))


def _whisper_layers(encoder, family, wave, lengths) -> List[EncoderLayer]:
    return espnet_encoder_layers(encoder, wave, lengths)


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


def _attribute(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _condition(encoder, when: str) -> bool:
    """A map entry's condition: "" (always), "path" or "not path" of an encoder attribute."""
    if not when:
        return True
    negate = when.startswith("not ")
    return bool(_attribute(encoder, when.removeprefix("not "))) != negate


def _family_timing(encoder, family, feats) -> Tuple[int, float]:
    """(rate, start) of the family's hooked layers in the encoder's input frames (samples for
    an encoder that takes the waveform)."""
    module = _attribute(encoder, family.timing)
    if module is None:  # an encoder without an input layer (transformer, input_layer: null)
        return 1, 0.0
    if family.takes_wave:
        return conv_stack_timing(module)
    return embed_timing(module, feats.size(-1), feats.device)


def _hooked_modules(encoder, hooks) -> List[Tuple[str, Hook, torch.nn.Module]]:
    """(layer name, hook, module) for every hook of the map, ``.*`` expanded."""
    found = []
    for hook in hooks:
        path, every = (hook.module[:-2], True) if hook.module.endswith(".*") else (hook.module, False)
        try:
            module = _attribute(encoder, path)
        except AttributeError:
            raise UnsupportedFamily(f"{class_path(encoder)} has no module {path!r}, which the layer "
                                    "map lists for its family") from None
        if every:
            found += [(f"{hook.name}{i + 1}", hook, m) for i, m in enumerate(module)]
        elif module is not None:
            found.append((hook.name, hook, module))
    return found


def stitch_blocks(encoder, blocks: torch.Tensor, frames: int) -> torch.Tensor:
    """A contextual-block layer's (B, n_blocks, block_size + 2, D) back onto the timeline
    (B, frames, D), by the rule the encoder applies to its last layer: block 0 gives its first
    ``block_size - look_ahead`` frames, every later block its ``hop_size`` frames after the
    past context, the last block what is left; the context vectors (first and last slot of each
    block) and the look-ahead are dropped."""
    size, hop, ahead = encoder.block_size, encoder.hop_size, encoder.look_ahead
    n_blocks = blocks.size(1)
    out = blocks.new_zeros(blocks.size(0), frames, blocks.size(-1))
    first = size - ahead  # frames block 0 keeps
    start = size - ahead - hop + 1  # where a later block's kept frames start (slot 0 = context)
    out[:, :first] = blocks[:, 0, 1:first + 1]
    done, block = first, 1
    while block * hop + size < frames and block < n_blocks:
        out[:, done:done + hop] = blocks[:, block, start:start + hop]
        done, block = done + hop, block + 1
    out[:, done:frames] = blocks[:, block, start:start + frames - done]
    return out


def _hook_layers(encoder, family, feats, lengths) -> List[EncoderLayer]:
    captured = []
    modules = _hooked_modules(encoder, family.hooks)

    def hook(name, how):
        def fn(module, inputs, output):
            captured.append((name, how, _split_output(output)))

        return fn

    handles = [m.register_forward_hook(hook(name, h.holds)) for name, h, m in modules]
    try:
        out, olens, _ = encoder(feats, lengths)
    finally:
        for h in handles:
            h.remove()
    if isinstance(out, tuple):  # intermediate-CTC encoders return (out, inters)
        out = out[0]
    if len(captured) != len(modules):
        raise RuntimeError(f"{class_path(encoder)}: captured {len(captured)} layer outputs, "
                           f"expected {len(modules)} ({', '.join(n for n, *_ in modules)})")

    rate, start = _family_timing(encoder, family, feats)
    layers: List[EncoderLayer] = []
    for name, holds, (x, _) in captured:
        if holds == BLOCKS and x.dim() == 4:  # a short utterance runs as one plain block
            x = stitch_blocks(encoder, x, out.size(1))
        layers.append((name, x, olens.long(), rate, start))
    if family.output and _condition(encoder, family.output_when):
        layers.append(("output", out, olens.long(), rate, start))
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


def _rnn_layers(encoder, family, feats, lengths) -> List[EncoderLayer]:
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


_COLLECTORS = {"hooks": _hook_layers, "rnn": _rnn_layers, "own": _own_layers,
               "whisper": _whisper_layers}


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
