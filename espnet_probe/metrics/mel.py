"""Distances between a predicted and a reference log-mel spectrogram, both (T, n_mels).

- ``mel_l1``: mean absolute difference over every frame and band (the probe's training loss,
  in the units of the log-mel: natural log of mel magnitude, see conf/fbank.yaml).
- ``mel_cepstral_distortion`` (MCD, dB): each frame's log-mel is turned into cepstra by an
  orthonormal DCT-II over the mel axis; c0 (overall level) is left out and coefficients
  1..n_coeffs (default 24) compared:

      MCD = mean over frames of (10 / ln 10) * sqrt(2 * sum_{d=1..24} (c_d - c'_d)^2)

  The 10/ln10 factor turns natural-log amplitude into dB; this is the usual MCD formula.
  Because these cepstra come from an 80-band log-mel with an orthonormal DCT rather than from
  an SPTK/WORLD mel-cepstral analysis, values compare layers and systems scored here with each
  other, not with MCD figures from other toolkits.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct

MCD_SCALE = 10.0 / np.log(10.0)


class MelShapeError(ValueError):
    pass


def _pair(pred, ref, max_len_diff: int, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    tag = f"'{name}': " if name else ""
    if pred.ndim != 2 or ref.ndim != 2 or pred.shape[1] != ref.shape[1]:
        raise MelShapeError(f"{tag}expected two (T, n_mels) arrays with the same n_mels, "
                            f"got {pred.shape} and {ref.shape}")
    if abs(pred.shape[0] - ref.shape[0]) > max_len_diff:
        raise MelShapeError(f"{tag}{pred.shape[0]} predicted frames vs {ref.shape[0]} reference "
                            f"frames (tolerance {max_len_diff})")
    t = min(pred.shape[0], ref.shape[0])
    if t == 0:
        raise MelShapeError(f"{tag}no frames")
    pred, ref = pred[:t], ref[:t]
    if not (np.isfinite(pred).all() and np.isfinite(ref).all()):
        raise MelShapeError(f"{tag}non-finite values in the mel spectrogram")
    return pred, ref


def mel_l1(pred, ref, max_len_diff: int = 0, name: str = "") -> float:
    """Mean |pred - ref| over frames and bands; lengths may differ by ``max_len_diff`` frames
    (the longer is trimmed)."""
    pred, ref = _pair(pred, ref, max_len_diff, name)
    return float(np.mean(np.abs(pred - ref)))


def mel_cepstra(log_mel, n_coeffs: int = 24) -> np.ndarray:
    """Cepstral coefficients 1..n_coeffs of each frame (orthonormal DCT-II over the mel axis)."""
    log_mel = np.asarray(log_mel, dtype=np.float64)
    if not 1 <= n_coeffs < log_mel.shape[-1]:
        raise ValueError(f"n_coeffs must be in 1..{log_mel.shape[-1] - 1}, got {n_coeffs}")
    return dct(log_mel, type=2, norm="ortho", axis=-1)[..., 1:n_coeffs + 1]


def mcd_per_frame(pred, ref, n_coeffs: int = 24, max_len_diff: int = 0,
                  name: str = "") -> np.ndarray:
    pred, ref = _pair(pred, ref, max_len_diff, name)
    diff = mel_cepstra(pred, n_coeffs) - mel_cepstra(ref, n_coeffs)
    return MCD_SCALE * np.sqrt(2.0 * np.sum(diff * diff, axis=-1))


def mel_cepstral_distortion(pred, ref, n_coeffs: int = 24, max_len_diff: int = 0,
                            name: str = "") -> float:
    """MCD in dB, averaged over frames (see the module docstring for the definition)."""
    return float(np.mean(mcd_per_frame(pred, ref, n_coeffs, max_len_diff, name)))
