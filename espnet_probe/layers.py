"""One interface to every named hidden layer of a trained ESPnet ASR model.

``extract_layers(model, feats, lengths)`` returns, in order, ``Layer`` records
with the hidden states (B, T_l, D_l) (zero beyond ``lengths``) and the
``frame_rate``: how many input-feature frames one frame of that layer spans
(like s3prl's hidden_states + downsample rates).  Layer 0 is ``input``, the
features after the model's own normalisation (global_mvn), i.e. what the
encoder saw in training.  A layer frame t spans input frames
[t * frame_rate, (t + 1) * frame_rate) nominally; convolutional subsampling can
shift the true receptive field by a few frames.

Supported encoders:
  * ours (``vgg_blstm``, ``blstm``): their ``forward_layers``;
  * ESPnet's conformer / transformer / branchformer / e_branchformer (any
    encoder with ``embed`` + ``encoders``): forward hooks, layers ``subsample``
    (when ``embed`` exists), ``block1``..``blockN`` (raw block outputs) and
    ``output`` (after the final LayerNorm, when the encoder has one);
  * ESPnet's ``rnn`` encoder: ``<type>1``..``<type>N`` (e.g. ``blstm1``), and
    ``output`` for the final projection of the un-projected variant.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Union

import numpy as np
import torch

from espnet_probe.asr.blstm import LayerOutput, zero_padding
from espnet_probe.asr.register import register_encoders

log = logging.getLogger(__name__)

# Nominal time downsampling of ESPnet's input layers, by class name.
_EMBED_RATES = {
    "Conv1dSubsampling1": 1,
    "Conv1dSubsampling2": 2,
    "Conv1dSubsampling3": 3,
    "Conv2dSubsampling": 4,
    "Conv2dSubsampling1": 1,
    "Conv2dSubsampling2": 2,
    "Conv2dSubsampling6": 6,
    "Conv2dSubsampling8": 8,
    "Sequential": 1,
    "Linear": 1,
}


@dataclass(frozen=True)
class Layer:
    name: str
    index: int
    hidden: torch.Tensor  # (B, T_l, D_l), zero beyond lengths
    lengths: torch.Tensor  # (B,) int64
    frame_rate: int  # input-feature frames per frame of this layer


def load_asr_model(
    config: Union[str, Path],
    checkpoint: Union[str, Path],
    device: str = "cpu",
) -> torch.nn.Module:
    """Build an ESPnet ASR model from its training ``config.yaml`` and a checkpoint.

    ``checkpoint`` may be a plain state dict (``valid.loss.best.pth``,
    ``N epoch.pth``) or a trainer ``checkpoint.pth`` (``{"model": ...}``).
    Unlike ESPnet's loader, parameter names must match exactly: a silently
    half-loaded model would make every probe meaningless.  The global_mvn
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
        raise ValueError(f"{config}: not an ESPnet training config (no mapping)")
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint}: not a state dict (got {type(state).__name__})")

    with tempfile.TemporaryDirectory() as tmp:
        _stand_in_stats(conf, state, config, Path(tmp))
        model = ASRTask.build_model(argparse.Namespace(**conf)).to(device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint} does not match the model built from {config}: "
            f"missing {sorted(missing)[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {sorted(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
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
    model: torch.nn.Module, feats: torch.Tensor, lengths: torch.Tensor
) -> List[Layer]:
    """Every hidden layer of ``model``'s encoder for a padded batch of features.

    ``feats`` (B, T, D) are the raw features as stored in the ark (the model
    applies its own frontend, if any, and normalisation).  The model is run
    in eval mode; its previous mode is restored.
    """
    if feats.dim() != 3:
        raise ValueError(f"feats must be (B, T, D), got shape {tuple(feats.shape)}")
    lengths = torch.as_tensor(lengths, dtype=torch.long, device=feats.device)
    if lengths.shape != (feats.size(0),):
        raise ValueError(f"lengths must be ({feats.size(0)},), got {tuple(lengths.shape)}")
    if int(lengths.min()) < 1 or int(lengths.max()) > feats.size(1):
        raise ValueError(
            f"lengths must lie in 1..{feats.size(1)}, got {lengths.tolist()}"
        )
    was_training = model.training
    model.eval()
    try:
        # clone: ESPnet's global_mvn normalises in place and would alter the caller's batch
        feats = feats[:, : int(lengths.max())].clone()
        if getattr(model, "frontend", None) is not None:
            feats, lengths = model.frontend(feats, lengths)
        if getattr(model, "normalize", None) is not None:
            feats, lengths = model.normalize(feats, lengths)
        feats = zero_padding(feats, lengths)
        layers = [Layer("input", 0, feats, lengths, 1)]
        if getattr(model, "preencoder", None) is not None:
            feats, new_lengths = model.preencoder(feats, lengths)
            if not torch.equal(new_lengths, lengths):
                raise NotImplementedError("a pre-encoder that changes the frame rate")
            layers.append(Layer("preencoder", 1, feats, lengths, 1))
        outs = encoder_layers(model.encoder, feats, lengths)
        for out in outs:
            layers.append(
                Layer(out.name, len(layers), zero_padding(out.hidden, out.lengths), out.lengths, out.rate)
            )
        return layers
    finally:
        model.train(was_training)


def encoder_layers(
    encoder: torch.nn.Module, feats: torch.Tensor, lengths: torch.Tensor
) -> List[LayerOutput]:
    """Every layer of an encoder given normalised features (no ``input`` layer).

    Stock encoders may leave junk beyond ``lengths``; ``extract_layers`` zeroes it.
    """
    if hasattr(encoder, "forward_layers"):
        return list(encoder.forward_layers(feats, lengths))
    name = type(encoder).__name__
    if name == "RNNEncoder":
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


def _block_layers(encoder, feats, lengths) -> List[LayerOutput]:
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

    embed_rate = 1
    if embed is not None:
        cls = type(embed).__name__
        if cls in _EMBED_RATES:
            embed_rate = _EMBED_RATES[cls]
        else:
            t_out = captured[0][1][0].size(1)
            embed_rate = max(1, round(feats.size(1) / t_out))
            log.warning("unknown input layer %s: frame rate estimated as %d", cls, embed_rate)

    layers: List[LayerOutput] = []
    cur_lengths = lengths
    for name, (x, mask) in captured:
        if mask is not None:
            cur_lengths = _mask_lengths(mask)
        layers.append(LayerOutput(name, x, cur_lengths, embed_rate))
    expected = len(encoder.encoders) + (embed is not None)
    if len(captured) != expected:
        raise RuntimeError(
            f"{type(encoder).__name__}: captured {len(captured)} layer outputs, expected {expected}"
        )
    if getattr(encoder, "normalize_before", False) and hasattr(encoder, "after_norm"):
        layers.append(LayerOutput("output", out, olens.long(), embed_rate))
    return layers


def _rnn_layers(encoder, feats, lengths) -> List[LayerOutput]:
    """ESPnet's RNNEncoder: RNNP (projection per layer) or RNN (one multi-layer RNN)."""
    if len(encoder.enc) != 1:
        raise NotImplementedError("RNNEncoder with several enc modules")
    module = encoder.enc[0]
    if type(module).__name__ == "RNNP":
        return _rnnp_layers(encoder, module, feats, lengths)
    return _rnn_stack_layers(module, feats, lengths)


def _rnnp_layers(encoder, rnnp, feats, lengths) -> List[LayerOutput]:
    projected = []
    handles = [
        getattr(rnnp, f"bt{i}").register_forward_hook(lambda m, i, o: projected.append(o))
        for i in range(rnnp.elayers)
    ]
    try:
        encoder(feats, lengths)
    finally:
        for h in handles:
            h.remove()
    layers: List[LayerOutput] = []
    b = feats.size(0)
    rate = 1
    for i, flat in enumerate(projected):
        sub = int(rnnp.subsample[i + 1])
        if sub > 1:
            # the same length rule RNNP applies
            lengths = torch.div(lengths + 1, sub, rounding_mode="floor")
            rate *= sub
        x = flat.view(b, -1, flat.size(-1))
        if i < rnnp.elayers - 1:
            x = torch.tanh(x)  # RNNP applies tanh (and dropout) before the next layer
        layers.append(LayerOutput(f"{rnnp.typ}{i + 1}", x, lengths, rate))
    return layers


def _rnn_stack_layers(rnn, feats, lengths) -> List[LayerOutput]:
    """Re-run a multi-layer torch RNN one layer at a time with its own weights."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    full = rnn.nbrnn
    layers: List[LayerOutput] = []
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
        layers.append(LayerOutput(f"{rnn.typ}{k + 1}", x, lengths, 1))
    out = torch.tanh(rnn.l_last(x))
    layers.append(LayerOutput("output", out, lengths, 1))
    return layers


def layer_table(layers: List[Layer]) -> str:
    """Human-readable summary, one line per layer."""
    rows = [f"{'idx':>3} {'name':<12} {'frames':>7} {'dim':>6} rate"]
    for layer in layers:
        rows.append(
            f"{layer.index:>3} {layer.name:<12} {layer.hidden.size(1):>7} "
            f"{layer.hidden.size(2):>6} {layer.frame_rate}"
        )
    return "\n".join(rows)
