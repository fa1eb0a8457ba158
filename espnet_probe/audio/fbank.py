"""The log-mel front end's settings and filterbank, without torch.

Kept apart from espnet_probe.audio.features so that tools which only read the settings (the
feature stage's staleness check, its merge step) start without torch's ~2 s import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from espnet_probe.utils.yaml_io import load_yaml


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
            raw = load_yaml(f) or {}
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
