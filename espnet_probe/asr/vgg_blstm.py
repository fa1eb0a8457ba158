"""VGG + BLSTM CTC encoder ("VGG-LSTM" in the paper) that exposes every layer.

Input (B, T, 240) is read as 3 channels x 80 mel bins: static | delta |
acceleration (the feature contract's order).  Conv layers are 3x3, stride 1,
zero padding 1, each followed by ReLU; after every second conv a 2x2 max-pool
(stride 2, ceil mode) halves time and frequency.  Then a BLSTM stack
(:class:`~espnet_probe.asr.blstm.BLSTMStack`).

Layer names (``forward_layers``), with the paper's 4 convs:
    cnn1, cnn2  ReLU(conv) output, before pool1        rate 1, dim C1*F, C2*F
    pool1       max-pool after cnn2                    rate 2, dim C2*ceil(F/2)
    cnn3, cnn4  ReLU(conv) output, before pool2        rate 2
    pool2       max-pool after cnn4 (= BLSTM input)    rate 4, dim C4*ceil(F/4)
    blstm1..5   see blstm.py                           rate 4 (x any BLSTM subsample)
A conv map (B, C, T, F) is given per frame as C*F values, channel-major
(index c*F + f).  cnnK is "the conv layer output" the paper probes; the pools
are listed separately so nothing between two layers is hidden.

Padded batches: conv outputs are zeroed beyond each sequence's length before
the next conv and before pooling, so a padded utterance sees the same zero
border as when it is alone (ReLU >= 0, so the zeros never win a max-pool).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from espnet_probe.asr.blstm import (
    BLSTMStack,
    EncoderLayer,
    LayeredEncoder,
    ceil_div_lengths,
    check_input,
    zero_padding,
)


def _per_frame(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, F) -> (B, T, C*F), channel-major."""
    b, c, t, f = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, t, c * f)


class VGGBLSTMEncoder(LayeredEncoder):
    """``encoder: vgg_blstm`` in an ESPnet ASR config.
    Layers: cnn1, cnn2, pool1, cnn3, cnn4, pool2, blstm1..blstmN (module docstring).

    Args:
        input_size: feature dimension; must be ``in_channels * mel bins`` (240).
        in_channels: how many feature streams are stacked along the last axis (3).
        conv_channels: output channels of each conv layer; a 2x2 max-pool follows
            every second one, so the count must be even (paper: 64, 64, 128, 128).
        num_layers, hidden_size, projection_size, subsample, dropout: the BLSTM
            stack (see :class:`BLSTMStack`); subsample defaults to none after the
            VGG's own 4x.
    """

    def __init__(
        self,
        input_size: int,
        in_channels: int = 3,
        conv_channels: Sequence[int] = (64, 64, 128, 128),
        num_layers: int = 5,
        hidden_size: int = 320,
        projection_size: int = 0,
        subsample: Optional[Sequence[int]] = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if in_channels < 1 or input_size % in_channels:
            raise ValueError(
                f"input_size={input_size} cannot be split into in_channels={in_channels} "
                "equal feature streams (expected 240 = 3 x 80: static | delta | accel)"
            )
        conv_channels = [int(c) for c in conv_channels]
        if not conv_channels or len(conv_channels) % 2:
            raise ValueError(
                f"conv_channels needs an even, non-zero number of layers (a pool follows "
                f"every second conv), got {conv_channels}"
            )
        self.input_size = input_size
        self.in_channels = in_channels
        self.freq = input_size // in_channels
        self.convs = torch.nn.ModuleList()
        prev = in_channels
        for c in conv_channels:
            self.convs.append(torch.nn.Conv2d(prev, c, kernel_size=3, stride=1, padding=1))
            prev = c
        # channels-last weights: oneDNN's CPU convolutions run ~1.3x faster (forward + backward
        # of vgg_blstm_small, BENCHMARKS.md section 1); in-place initialisation, checkpoint
        # loading and .to(device) all keep the layout, and the values are the same
        self.convs.to(memory_format=torch.channels_last)
        self.pool = torch.nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.num_pools = len(conv_channels) // 2
        freq = self.freq
        for _ in range(self.num_pools):
            freq = (freq + 1) // 2
        self.blstm = BLSTMStack(prev * freq, num_layers, hidden_size, projection_size, subsample,
                                dropout)

    def _run(self, xs_pad, ilens, collect):
        check_input(xs_pad, ilens, self.input_size, type(self).__name__)
        # zero the padding: the first conv's 3x3 window reaches one frame past the end
        xs_pad = zero_padding(xs_pad[:, : int(ilens.max())], ilens)
        b, t, _ = xs_pad.shape
        # (B, T, C*F) -> (B, C, T, F): channel c holds features [c*F, (c+1)*F).
        x = xs_pad.reshape(b, t, self.in_channels, self.freq).transpose(1, 2)
        lengths, rate = ilens, 1
        layers: List[EncoderLayer] = []
        for k, conv in enumerate(self.convs):
            x = zero_padding(torch.relu(conv(x)), lengths, time_dim=2)
            if collect:
                layers.append((f"cnn{k + 1}", _per_frame(x), lengths, rate, 0.0))
            if k % 2 == 1:
                x = self.pool(x)
                lengths = ceil_div_lengths(lengths, 2)
                rate *= 2
                if collect:
                    layers.append((f"pool{(k + 1) // 2}", _per_frame(x), lengths, rate, 0.0))
        out, olens, rnn_layers = self.blstm(_per_frame(x), lengths, in_rate=rate, collect=collect)
        return out[:, : int(olens.max())], olens, layers + rnn_layers
