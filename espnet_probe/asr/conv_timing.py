"""Where the frames of an SSL encoder's convolutional feature extractor sit in the waveform.

HuBERT's and wav2vec 2.0's first convolution is followed by a GroupNorm over the whole
utterance, so every frame depends on every sample and no gradient shows a receptive field; the
convolutions' kernels, strides and dilations do.  Output frame j reads samples
[j * rate, j * rate + field) and spans one rate around that window's centre.
"""

from __future__ import annotations

from typing import List, Tuple

import torch

from espnet_probe.families import UnsupportedFamily


def feature_convs(module: torch.nn.Module) -> List[torch.nn.Conv1d]:
    """The Conv1d chain of a waveform feature extractor, checked to be one unpadded chain from
    the 1-channel waveform (else its frames cannot be timed by this rule)."""
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv1d)]
    if not convs:
        raise UnsupportedFamily(f"{type(module).__name__}: no 1-d convolutions to time its frames by")
    channels = 1
    for conv in convs:
        if conv.in_channels != channels or conv.padding not in ((0,), "valid"):
            raise UnsupportedFamily(f"{type(module).__name__}: its convolutions are not one "
                                      "unpadded chain from the waveform")
        channels = conv.out_channels
    return convs


def conv_stack_timing(module: torch.nn.Module) -> Tuple[int, float]:
    """(rate, start) in samples of a waveform feature extractor's frames (module doc)."""
    field, rate = 1, 1
    for conv in feature_convs(module):
        field += (conv.kernel_size[0] - 1) * conv.dilation[0] * rate
        rate *= conv.stride[0]
    centre0 = field / 2  # of samples [0, field): sample i spans [i, i + 1)
    return rate, centre0 - rate / 2
