"""Adding noise to speech at an exact signal-to-noise ratio.

SNR definition used everywhere in this project (training augmentation and fixed-SNR test sets):

    SNR = 10 * log10( sum_t s[t]^2 / sum_t n[t]^2 )

summed over the whole utterance (no VAD, no frame weighting), where ``s`` is the speech and
``n`` the noise actually added, both of the utterance's length. A noise recording is fitted to
that length first: cropped at a random offset when it is longer, looped (wrapping around from a
random offset) when it is shorter. Babble is the sum of several different speech recordings,
each fitted the same way and scaled to equal energy before they are added, so no single talker
dominates; the sum is then treated as one noise signal.

If the mixture's peak would exceed ``peak_limit`` (0.99 by default), the *mixture* is scaled
down, i.e. speech and noise by the same gain, which leaves the SNR unchanged. The gain is
returned so that the speech inside a mixture is exactly ``gain * speech``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below this RMS (-80 dBFS, about 3 LSB of 16-bit audio) a signal is treated as silence:
# scaling it to a target SNR would only amplify quantisation noise.
SILENCE_RMS = 10 ** (-80 / 20)
DEFAULT_PEAK_LIMIT = 0.99


class MixError(ValueError):
    """Speech or noise that cannot be mixed (silent, empty, mismatched)."""


def energy(x: np.ndarray) -> float:
    """Sum of squares, accumulated in float64 (pairwise) so long utterances do not drift.

    Not np.dot: multi-threaded BLAS dot products were 30x slower here under CPU contention.
    """
    return float(np.square(x, dtype=np.float64).sum())


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(energy(x) / x.size)) if x.size else 0.0


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """The SNR of ``speech`` over ``noise`` by the whole-utterance definition above."""
    es, en = energy(speech), energy(noise)
    if en == 0.0:
        return float("inf")
    if es == 0.0:
        return float("-inf")
    return 10.0 * np.log10(es / en)


def is_silent(x: np.ndarray) -> bool:
    return x.size == 0 or rms(x) < SILENCE_RMS


def fit_length(noise: np.ndarray, length: int, offset: int) -> np.ndarray:
    """``length`` samples of ``noise`` starting at ``offset``; a short noise wraps around."""
    n = noise.size
    if n == 0:
        raise MixError("noise has no samples")
    if length <= 0:
        raise MixError(f"target length must be positive, got {length}")
    if not 0 <= offset < n:
        raise MixError(f"offset {offset} is outside the noise (0..{n - 1})")
    if offset + length <= n:
        return noise[offset:offset + length]
    return np.take(noise, (offset + np.arange(length)) % n)


def random_offset(noise_len: int, length: int, rng: np.random.Generator) -> int:
    """Crop offset for a long noise; loop start for a short one (any sample may start it)."""
    if noise_len >= length:
        return int(rng.integers(0, noise_len - length + 1))
    return int(rng.integers(0, noise_len))


def make_babble(talkers: list[np.ndarray]) -> np.ndarray:
    """Sum of equal-length speech signals, each scaled to unit energy first."""
    if not talkers:
        raise MixError("babble needs at least one talker")
    length = talkers[0].size
    out = np.zeros(length, dtype=np.float64)
    for i, t in enumerate(talkers):
        if t.size != length:
            raise MixError(f"babble talker {i} has {t.size} samples, expected {length}")
        if is_silent(t):
            raise MixError(f"babble talker {i} is silent (RMS below -80 dBFS)")
        out += np.asarray(t, dtype=np.float64) / np.sqrt(energy(t))
    return out


@dataclass
class Mixture:
    mixture: np.ndarray  # float32, what gets written
    speech: np.ndarray   # float64, gain * clean speech (the speech inside the mixture)
    noise: np.ndarray    # float64, the noise inside the mixture (mixture = speech + noise)
    gain: float          # anti-clipping gain applied to both (1.0 when none was needed)
    snr: float           # the target SNR in dB


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr: float, *,
               peak_limit: float = DEFAULT_PEAK_LIMIT) -> Mixture:
    """Add ``noise`` (already fitted to the speech length) to ``speech`` at ``snr`` dB exactly."""
    if speech.ndim != 1 or noise.ndim != 1:
        raise MixError("speech and noise must be 1-D (mono)")
    if speech.size != noise.size:
        raise MixError(f"speech has {speech.size} samples but noise has {noise.size}; "
                       "fit the noise to the speech length first")
    if not np.isfinite(snr):
        raise MixError(f"SNR must be finite, got {snr}")
    if not 0 < peak_limit <= 1:
        raise MixError(f"peak_limit must be in (0, 1], got {peak_limit}")
    if is_silent(speech):
        raise MixError(f"speech is silent (RMS {rms(speech):.2e}, below -80 dBFS); "
                       "the SNR is undefined")
    if is_silent(noise):
        raise MixError(f"noise is silent (RMS {rms(noise):.2e}, below -80 dBFS); "
                       "it cannot be scaled to an SNR")
    s = np.asarray(speech, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    n = n * np.sqrt(energy(s) / (energy(n) * 10.0 ** (snr / 10.0)))
    mixed = s + n
    peak = float(np.max(np.abs(mixed)))
    gain = 1.0
    if peak > peak_limit:
        gain = peak_limit / peak
        s, n, mixed = s * gain, n * gain, mixed * gain
    return Mixture(mixture=mixed.astype(np.float32), speech=s, noise=n, gain=gain, snr=float(snr))
