"""Paired bootstrap tests: is system A's score different from system B's on the same items?

Every comparison the report draws (trained vs random encoder, robust vs baseline, a layer vs
the one before it) scores both sides on the same utterances and the same trial list, so the
test resamples those shared items once per replicate and takes the difference of the two
statistics on the same resample.  What is shared between the two sides (how hard each
utterance is) cancels, and the interval is much narrower than two overlapping marginal CIs
would suggest.

- Per-utterance metrics (STOI, ESTOI, PESQ, mel L1, MCD, speaker-ID correctness): the mean
  of the per-utterance differences, utterances resampled with replacement.
- Verification (EER, minDCF): the trials of the shared list, targets and non-targets
  resampled separately (stratified, as metrics.verification's marginal intervals).  Trials
  share utterances, which makes a marginal trial bootstrap optimistic; in the *difference*
  the utterance effects common to both sides cancel, and on simulated scores with strong
  per-utterance effects the paired interval's width matches the true spread of the
  difference (tests/test_paired.py).  Resampling utterances instead (each trial weighted by
  the product of its two utterances' counts) was measured there at twice the true spread.

The interval is the percentile interval of the replicate differences; ``significant`` means
it excludes 0.  ``p`` is the two-sided bootstrap p-value (twice the smaller tail mass at 0),
for ordering findings, not for a threshold of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from espnet_probe.metrics.verification import (_check, _check_dcf_params, _eer_from_rates,
                                               _min_dcf_from_rates)


class PairedTestError(ValueError):
    """The two sides cannot be paired (different items, too few of them)."""


@dataclass(frozen=True)
class PairedDifference:
    """A - B with its bootstrap interval."""

    value_a: float
    value_b: float
    diff: float
    ci_low: float
    ci_high: float
    p: float
    n: int          # paired items: utterances, or trials for verification
    n_boot: int

    @property
    def significant(self) -> bool:
        return self.ci_low > 0.0 or self.ci_high < 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def _interval(boot: np.ndarray, level: float) -> tuple[float, float, float]:
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    p = min(1.0, 2.0 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    return float(lo), float(hi), p


def _counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) draw counts of a bootstrap resample of n items."""
    draws = rng.integers(0, n, size=(n_boot, n))
    flat = (draws + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)


def paired_mean_difference(a: Sequence[float], b: Sequence[float], n_boot: int = 2000,
                           seed: int = 0, level: float = 0.95) -> PairedDifference:
    """mean(a) - mean(b) over paired items (a[i] and b[i] measure the same utterance)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise PairedTestError(f"paired values must be 1-D and of equal length, got {a.shape} "
                              f"and {b.shape}")
    if a.size < 2:
        raise PairedTestError(f"need at least 2 paired utterances, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise PairedTestError("paired values must be finite (drop failed utterances on both sides)")
    d = a - b
    counts = _counts(np.random.default_rng(seed), n_boot, d.size)
    boot = counts @ d / d.size
    lo, hi, p = _interval(boot, level)
    return PairedDifference(float(a.mean()), float(b.mean()), float(d.mean()), lo, hi, p,
                            int(d.size), n_boot)


def _weighted_rates(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray):
    """(fnr, fpr) per replicate for trials weighted by ``weights`` (B, n); as verification._rates
    with the threshold sweep over this system's own distinct scores."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    ends = np.append(np.flatnonzero(np.diff(s) > 0) + 1, s.size)
    w = weights[:, order]
    tgt = labels[order]
    cum_t = np.cumsum(w * tgt, axis=1)[:, ends - 1]
    cum_n = np.cumsum(w * ~tgt, axis=1)[:, ends - 1]
    tot_t, tot_n = cum_t[:, -1:], cum_n[:, -1:]
    zeros = np.zeros((w.shape[0], 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        fnr = np.hstack([zeros, cum_t / tot_t])
        fpr = np.hstack([np.ones_like(zeros), 1.0 - cum_n / tot_n])
    return fnr, fpr


def _stratified_weights(rng: np.random.Generator, n_boot: int, labels: np.ndarray) -> np.ndarray:
    weights = np.zeros((n_boot, labels.size))
    for members in (np.flatnonzero(labels), np.flatnonzero(~labels)):
        weights[:, members] = _counts(rng, n_boot, members.size)
    return weights


def paired_verification_difference(scores_a: Sequence[float], scores_b: Sequence[float],
                                   labels: Sequence[bool], n_boot: int = 1000, seed: int = 0,
                                   level: float = 0.95, p_target: float = 0.01,
                                   c_miss: float = 1.0, c_fa: float = 1.0,
                                   chunk: int = 200) -> dict[str, PairedDifference]:
    """EER (percent) and minDCF of A minus B, both scored on one trial list (same order)."""
    if np.shape(scores_a) != np.shape(scores_b):
        raise PairedTestError(f"{np.size(scores_a)} and {np.size(scores_b)} scores: not the same "
                              "trials")
    scores_a, labels = _check(scores_a, labels)
    scores_b, _ = _check(scores_b, labels)
    _check_dcf_params(p_target, c_miss, c_fa)

    def stats(scores, weights):
        fnr, fpr = _weighted_rates(scores, labels, weights)
        return (100.0 * _eer_from_rates(fnr, fpr)[0],
                _min_dcf_from_rates(fnr, fpr, p_target, c_miss, c_fa))

    ones = np.ones((1, labels.size))
    point_a, point_b = stats(scores_a, ones), stats(scores_b, ones)
    rng = np.random.default_rng(seed)
    diffs: tuple[list, list] = ([], [])
    for start in range(0, n_boot, chunk):
        weights = _stratified_weights(rng, min(chunk, n_boot - start), labels)
        a, b = stats(scores_a, weights), stats(scores_b, weights)
        for k in (0, 1):
            diffs[k].append(a[k] - b[k])
    out = {}
    for k, name in enumerate(("eer", "mindcf")):
        lo, hi, p = _interval(np.concatenate(diffs[k]), level)
        out[name] = PairedDifference(float(point_a[k][0]), float(point_b[k][0]),
                                     float(point_a[k][0] - point_b[k][0]), lo, hi, p,
                                     int(labels.size), n_boot)
    return out
