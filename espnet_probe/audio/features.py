"""Log-mel features with deltas: the ASR input (T, 240) and the probe target (T, 80).

One implementation serves the ASR front end, the probe target and the vocoder's inverse, so the
three can never disagree on the filterbank or framing. See conf/fbank.yaml for the choices.
"""

from __future__ import annotations

import numpy as np
import torch

from espnet_probe.audio.fbank import FbankConfig, hz_to_mel, mel_filterbank, mel_to_hz  # noqa: F401


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
