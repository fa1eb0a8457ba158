"""What an ASR model takes (``model_input``): a waveform for a model with its own frontend,
this project's features otherwise, and the timing of its input frames (layer 0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

from espnet_probe.asr.whisper import HOP, SAMPLE_RATE, is_espnet_whisper
from espnet_probe.families import UnsupportedFamily, family_of, frontend_of


class InputMismatchError(ValueError):
    """A model was given the other kind of input than it was trained on."""


@dataclass(frozen=True)
class ModelInput:
    """What a model takes: ``wave`` (B, N) samples at ``sample_rate``, or ``feats`` (B, T, dim)
    frames every ``period`` seconds; its input frames (layer 0) are ``period`` seconds apart
    and frame 0 spans from ``offset`` seconds."""

    kind: str  # "wave" | "feats"
    period: float
    offset: float
    sample_rate: int = 16000
    dim: int = 0  # feature size (kind feats)

    def describe(self) -> str:
        if self.kind == "wave":
            return f"raw waveform at {self.sample_rate} Hz (frontend frames every {self.period * 1e3:g} ms)"
        return f"{self.dim}-dim features every {self.period * 1e3:g} ms"

    def check(self, speech: torch.Tensor, who: str = "model") -> None:
        """Refuse the other kind of input, with what was expected and what came."""
        if self.kind == "wave" and speech.dim() != 2:
            raise InputMismatchError(
                f"{who} takes a {self.describe()} (it has its own frontend), but was given "
                f"features of shape {tuple(speech.shape)}; give it the waveform (wave.scp)")
        if self.kind == "feats" and (speech.dim() != 3 or self.dim and speech.size(-1) != self.dim):
            raise InputMismatchError(
                f"{who} takes {self.describe()} (it has no frontend), but was given input of "
                f"shape {tuple(speech.shape)}" + ("; give it the features (feats.scp), not the "
                                                   "waveform" if speech.dim() == 2 else ""))

    def dummy(self, seconds: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """A silent batch of one utterance of ``seconds``, for sizing probes."""
        if self.kind == "wave":
            n = int(round(seconds * self.sample_rate))
            return torch.zeros(1, n), torch.tensor([n])
        t = max(1, int(round(seconds / self.period)))
        return torch.zeros(1, t, self.dim or 240), torch.tensor([t])


def model_input(model: torch.nn.Module, feature_period: float = 0.01) -> ModelInput:
    """The kind of input ``model`` was trained on, and its layer-0 timing.

    A model without a frontend was trained on this project's features (centred frames every
    ``feature_period`` seconds, conf/fbank.yaml).  ESPnet's default frontend is timed from its
    own STFT settings (hop_length, win_length, center); the input frames of a model whose
    encoder or s3prl frontend reads the waveform itself are its samples.  A frontend the layer
    map (families.py) does not know is refused.
    """
    frontend = getattr(model, "frontend", None)
    encoder = getattr(model, "encoder", None)
    if frontend is None and is_espnet_whisper(encoder):
        # its own log-mel of the waveform: centred 25 ms windows every 10 ms
        return ModelInput("wave", HOP / SAMPLE_RATE, -HOP / 2 / SAMPLE_RATE, sample_rate=SAMPLE_RATE)
    # an SSL encoder's or s3prl upstream's own convolutions over the 16 kHz samples (the only rate
    # they take): the input frames are the samples (frontend_of refuses a frontend the map lacks)
    if _encoder_takes_wave(encoder) if frontend is None else frontend_of(frontend).collect == "s3prl":
        return ModelInput("wave", 1 / SAMPLE_RATE, -0.5 / SAMPLE_RATE, sample_rate=SAMPLE_RATE)
    if frontend is None:
        dim = _feature_dim(model)
        return ModelInput("feats", feature_period, -feature_period / 2, dim=dim)
    stft = getattr(frontend, "stft", None)
    fs = getattr(frontend, "fs", None)
    if fs is None and hasattr(getattr(frontend, "logmel", None), "mel_options"):
        fs = frontend.logmel.mel_options.get("sr")  # DefaultFrontend keeps it in its LogMel
    hop, win = int(stft.hop_length), int(stft.win_length or stft.n_fft)
    period = hop / fs
    # centred frames: frame k is centred on sample k * hop; else frame k starts at k * hop
    centre0 = 0.0 if stft.center else win / 2
    return ModelInput("wave", period, (centre0 - hop / 2) / fs, sample_rate=int(fs))


def _encoder_takes_wave(encoder) -> bool:
    try:
        return family_of(encoder).takes_wave
    except UnsupportedFamily:
        return False  # refused later, by extract_layers, with the reason


def _feature_dim(model: torch.nn.Module) -> int:
    normalize = getattr(model, "normalize", None)
    if normalize is not None and hasattr(normalize, "mean"):
        return int(normalize.mean.numel())
    encoder = getattr(model, "encoder", None)
    if isinstance(getattr(encoder, "input_size", None), int):
        return int(encoder.input_size)
    return 0  # unknown: not checked
