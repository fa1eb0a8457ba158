"""Pure-BLSTM CTC encoder ("pure-LSTM" in the paper) that exposes every layer.

A stack of single-layer bidirectional LSTMs.  Each layer may be followed by an
ESPnet-style projection (Linear, then tanh except after the last layer) and by
time downsampling.  Downsampling is frame skipping (keep frames 0, f, 2f, ...),
the same as ESPnet's ``RNNP`` and the paper authors' toolkit ("drop" style); the
kept length of a sequence of ``L`` frames is ``ceil(L / f)``.

Each BLSTM layer is two unidirectional LSTMs; the backward one reads every
sequence reversed within its own length.  That is exact for padded batches
(padding never reaches a valid frame) and, on CPU, far faster to train than
``pack_padded_sequence``, whose backward pass grows super-linearly with length
(torch 2.13: 2.5 s vs 0.14 s for 14 x 700 frames, 128 cells).

What a layer name means (``forward_layers``): ``blstmK`` is the K-th layer's
output (after its projection, if any) BEFORE the downsampling that follows it,
i.e. the representation at the rate the layer itself ran at.  With the paper's
schedule ``subsample: [1, 2, 2, 2, 1]`` (downsample after layers 2, 3 and 4)
the rates of blstm1..blstm5 are 1, 1, 2, 4, 8.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder


# The encoder contract (``forward_layers``): each layer, in encoder order, as a plain tuple
# (name, hidden (B, T_l, D_l) zero beyond lengths, lengths (B,), rate, start), timed in the
# encoder's own input frames: ``rate`` input frames per layer frame, ``start`` where frame 0's
# span starts (0 for pooling and frame skipping; convolutional subsampling centres its frames
# later).  Only the frontend knows seconds, so the one description of a layer
# (espnet_probe.layer_record.Layer) is made from these by layers.extract_layers.
EncoderLayer = Tuple[str, torch.Tensor, torch.Tensor, int, float]


def ceil_div_lengths(lengths: torch.Tensor, factor: int) -> torch.Tensor:
    """Frames kept by ``x[:, ::factor]`` or a ceil-mode pool of size/stride ``factor``."""
    return torch.div(lengths + factor - 1, factor, rounding_mode="floor")


def zero_padding(x: torch.Tensor, lengths: torch.Tensor, time_dim: int = 1) -> torch.Tensor:
    """Zero every frame at or beyond its sequence's length along ``time_dim``."""
    if int(lengths.min()) >= x.size(time_dim):  # no padding: nothing to zero, no copy
        return x
    steps = torch.arange(x.size(time_dim), device=x.device)
    keep = steps[None, :] < lengths.to(x.device)[:, None]  # (B, T)
    shape = [1] * x.dim()
    shape[0], shape[time_dim] = keep.size(0), keep.size(1)
    return torch.where(keep.view(shape), x, x.new_zeros(()))  # not x * mask: inf * 0 = nan


def check_input(xs_pad: torch.Tensor, ilens: torch.Tensor, input_size: int, who: str) -> None:
    """Clear errors for inputs that would otherwise fail deep inside torch."""
    if xs_pad.dim() != 3:
        raise ValueError(f"{who}: expected input (B, T, {input_size}), got shape {tuple(xs_pad.shape)}")
    if xs_pad.size(2) != input_size:
        raise ValueError(
            f"{who}: input has {xs_pad.size(2)} features per frame, the encoder was built "
            f"for input_size={input_size}"
        )
    if ilens.dim() != 1 or ilens.size(0) != xs_pad.size(0):
        raise ValueError(f"{who}: ilens must be (B,)={xs_pad.size(0)}, got shape {tuple(ilens.shape)}")
    if len(ilens) and (int(ilens.min()) < 1 or int(ilens.max()) > xs_pad.size(1)):
        raise ValueError(
            f"{who}: lengths must lie in 1..{xs_pad.size(1)} (the padded length), "
            f"got min {int(ilens.min())} max {int(ilens.max())}"
        )


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse frames 0..L-1 of each sequence in (B, T, D); padding stays put."""
    steps = torch.arange(x.size(1), device=x.device)[None, :]
    lens = lengths.to(x.device)[:, None]
    index = torch.where(steps < lens, lens - 1 - steps, steps)
    return x.gather(1, index[:, :, None].expand_as(x))


class BiLSTM(torch.nn.Module):
    """One bidirectional LSTM layer over a padded batch: (B, T, D) -> (B, T, 2H)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.fwd = torch.nn.LSTM(input_size, hidden_size, batch_first=True)
        self.bwd = torch.nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.training and x.is_cuda:
            self.fwd.flatten_parameters()
            self.bwd.flatten_parameters()
        forward, _ = self.fwd(x)  # frames after L never influence frames before L
        backward, _ = self.bwd(reverse_within_lengths(x, lengths))
        out = torch.cat([forward, reverse_within_lengths(backward, lengths)], dim=-1)
        return zero_padding(out, lengths)


class BLSTMStack(torch.nn.Module):
    """``num_layers`` single-layer BLSTMs with optional projection and frame skipping."""

    def __init__(
        self,
        input_size: int,
        num_layers: int = 5,
        hidden_size: int = 320,
        projection_size: int = 0,
        subsample: Optional[Sequence[int]] = None,
        dropout: float = 0.0,
        name_prefix: str = "blstm",
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        subsample = [1] * num_layers if subsample is None else [int(s) for s in subsample]
        if len(subsample) != num_layers:
            raise ValueError(
                f"subsample needs one factor per layer ({num_layers}), got {list(subsample)}"
            )
        if any(s < 1 for s in subsample):
            raise ValueError(f"subsample factors must be >= 1, got {subsample}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.subsample = subsample
        self.name_prefix = name_prefix
        self.rnns = torch.nn.ModuleList()
        self.projections = torch.nn.ModuleList()
        size = input_size
        for _ in range(num_layers):
            self.rnns.append(BiLSTM(size, hidden_size))
            size = 2 * hidden_size
            if projection_size > 0:
                self.projections.append(torch.nn.Linear(size, projection_size))
                size = projection_size
        self.dropout = torch.nn.Dropout(dropout)
        self._output_size = size

    def output_size(self) -> int:
        return self._output_size

    def forward(
        self,
        xs: torch.Tensor,
        lengths: torch.Tensor,
        in_rate: int = 1,
        collect: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, List[EncoderLayer]]:
        """Run all layers; with ``collect`` also return every layer's output."""
        layers: List[EncoderLayer] = []
        rate = in_rate
        last = len(self.rnns) - 1
        for k, rnn in enumerate(self.rnns):
            ys = rnn(xs, lengths)
            if len(self.projections):
                ys = self.projections[k](ys)
                if k < last:
                    ys = torch.tanh(ys)
                ys = zero_padding(ys, lengths)  # projection bias leaks into padding
            if collect:
                layers.append((f"{self.name_prefix}{k + 1}", ys, lengths, rate, 0.0))
            if k < last:
                ys = self.dropout(ys)
            factor = self.subsample[k]
            if factor > 1:
                ys = ys[:, ::factor]
                lengths = ceil_div_lengths(lengths, factor)
                rate *= factor
            xs = ys
        return xs, lengths, layers


class LayeredEncoder(AbsEncoder):
    """What both encoders share: ESPnet's ``forward`` and the probes' ``forward_layers``, both
    from one ``_run(xs_pad, ilens, collect) -> (out, olens, layers)``, over a ``self.blstm``
    stack (layers are collected only when asked, so training pays nothing for them)."""

    def output_size(self) -> int:
        return self.blstm.output_size()

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        out, olens, _ = self._run(xs_pad, ilens, collect=False)
        return out, olens, None

    def forward_layers(self, xs_pad: torch.Tensor, ilens: torch.Tensor) -> List[EncoderLayer]:
        """Every layer, input side first (the names: the class docstring)."""
        return self._run(xs_pad, ilens, collect=True)[2]


class BLSTMEncoder(LayeredEncoder):
    """Paper's pure-LSTM CTC encoder: ``encoder: blstm`` in an ESPnet ASR config.
    Layers: blstm1..blstmN.

    Args:
        input_size: feature dimension (240 = 80 log-mel + delta + acceleration).
        num_layers: number of BLSTM layers.
        hidden_size: LSTM cells per direction.
        projection_size: size of the Linear projection after each layer (0: none,
            a layer then outputs 2 * hidden_size).
        subsample: time downsampling factor applied after each layer.
        dropout: dropout between layers.
    """

    def __init__(
        self,
        input_size: int,
        num_layers: int = 5,
        hidden_size: int = 320,
        projection_size: int = 0,
        subsample: Sequence[int] = (1, 2, 2, 2, 1),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.input_size = input_size
        self.blstm = BLSTMStack(input_size, num_layers, hidden_size, projection_size, subsample,
                                dropout)

    def _run(self, xs_pad, ilens, collect):
        check_input(xs_pad, ilens, self.input_size, type(self).__name__)
        xs_pad = xs_pad[:, : int(ilens.max())]
        out, olens, layers = self.blstm(xs_pad, ilens, in_rate=1, collect=collect)
        return out[:, : int(olens.max())], olens, layers
