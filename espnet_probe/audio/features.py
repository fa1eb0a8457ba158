"""Log-mel features with deltas: the ASR input (T, 240) and the probe target (T, 80).

One implementation serves the ASR front end, the probe target and the vocoder's inverse, so the
three can never disagree on the filterbank or framing. See conf/fbank.yaml for the choices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import yaml


@dataclass(frozen=True)
class FbankConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    fmin: float = 20.0
    fmax: float = 7600.0
    log_floor: float = 1e-5
    delta_window: int = 2

    @classmethod
    def from_yaml(cls, path: str | Path) -> "FbankConfig":
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown fbank options {unknown}; known: {sorted(known)}")
        cfg = cls(**raw)
        if cfg.win_length > cfg.n_fft or cfg.hop_length <= 0:
            raise ValueError(f"{path}: need 0 < hop_length and win_length <= n_fft")
        if not 0 <= cfg.fmin < cfg.fmax <= cfg.sample_rate / 2:
            raise ValueError(f"{path}: need 0 <= fmin < fmax <= sample_rate / 2")
        return cfg

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def feat_dim(self) -> int:
        return 3 * self.n_mels


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: FbankConfig) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, peak 1, equally spaced on the HTK mel scale."""
    bins_hz = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_hz[None] - lower) / (centre - lower)
    falling = (upper - bins_hz[None]) / (upper - centre)
    fb = np.clip(np.minimum(rising, falling), 0.0, None)
    empty = np.flatnonzero(fb.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"mel filters {empty.tolist()} cover no FFT bin: lower n_mels or raise n_fft")
    return fb.astype(np.float32)


def delta(x: torch.Tensor, window: int) -> torch.Tensor:
    """Regression deltas along time of (..., T, D): sum_n n (x[t+n] - x[t-n]) / (2 sum_n n^2)."""
    t = x.shape[-2]
    padded = torch.cat([x[..., :1, :].expand(*x.shape[:-2], window, x.shape[-1]), x,
                        x[..., -1:, :].expand(*x.shape[:-2], window, x.shape[-1])], dim=-2)
    out = torch.zeros_like(x)
    for n in range(1, window + 1):
        out = out + n * (padded[..., window + n:window + n + t, :]
                         - padded[..., window - n:window - n + t, :])
    return out / (2 * sum(n * n for n in range(1, window + 1)))


class LogMelExtractor:
    """Waveform -> log-mel (T, n_mels) and ASR features (T, 3 * n_mels), batched on torch."""

    def __init__(self, cfg: FbankConfig):
        self.cfg = cfg
        self.window = torch.hann_window(cfg.win_length)
        self.fbank = torch.from_numpy(mel_filterbank(cfg))

    def num_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.cfg.hop_length

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """(..., N) -> STFT magnitude (..., T, n_fft // 2 + 1)."""
        spec = torch.stft(wav, n_fft=self.cfg.n_fft, hop_length=self.cfg.hop_length,
                          win_length=self.cfg.win_length, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        return spec.abs().transpose(-1, -2)

    def log_mel(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        wav = torch.as_tensor(wav, dtype=torch.float32)
        if wav.shape[-1] <= self.cfg.n_fft // 2:
            raise ValueError(f"audio of {wav.shape[-1]} samples is shorter than half an FFT "
                             f"window ({self.cfg.n_fft // 2 + 1} samples needed)")
        mel = self.magnitude(wav) @ self.fbank.T
        return torch.log(torch.clamp(mel, min=self.cfg.log_floor))

    def with_deltas(self, log_mel: torch.Tensor) -> torch.Tensor:
        d1 = delta(log_mel, self.cfg.delta_window)
        d2 = delta(d1, self.cfg.delta_window)
        return torch.cat([log_mel, d1, d2], dim=-1)

    def __call__(self, wav: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One utterance -> (features (T, 240), log-mel (T, 80)) as float32 numpy arrays."""
        with torch.no_grad():
            lm = self.log_mel(wav)
            feats = self.with_deltas(lm)
        return feats.numpy(), lm.numpy()
