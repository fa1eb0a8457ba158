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

from espnet_probe.metrics.verification import (check_dcf_params, checked_trials, eer_from_rates,
                                               min_dcf_from_rates, sort_trials, stratified_counts,
                                               weighted_error_rates)


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
    counts = stratified_counts(np.random.default_rng(seed), n_boot, np.arange(d.size), d.size)
    boot = counts @ d / d.size
    lo, hi, p = _interval(boot, level)
    return PairedDifference(float(a.mean()), float(b.mean()), float(d.mean()), lo, hi, p,
                            int(d.size), n_boot)


def paired_verification_difference(scores_a: Sequence[float], scores_b: Sequence[float],
                                   labels: Sequence[bool], n_boot: int = 1000, seed: int = 0,
                                   level: float = 0.95, p_target: float = 0.01,
                                   c_miss: float = 1.0, c_fa: float = 1.0,
                                   chunk: int = 200) -> dict[str, PairedDifference]:
    """EER (percent) and minDCF of A minus B, both scored on one trial list (same order)."""
    if np.shape(scores_a) != np.shape(scores_b):
        raise PairedTestError(f"{np.size(scores_a)} and {np.size(scores_b)} scores: not the same "
                              "trials")
    scores_a, labels = checked_trials(scores_a, labels)
    scores_b, _ = checked_trials(scores_b, labels)
    check_dcf_params(p_target, c_miss, c_fa)

    sorted_a, sorted_b = sort_trials(scores_a, labels), sort_trials(scores_b, labels)

    def stats(st, weights):
        """EER and minDCF per replicate of trial weights (B, n), in the trials' own order."""
        w = weights[:, st.order]
        fnr, fpr = weighted_error_rates(w * st.is_target, w * ~st.is_target, st.group_ends)
        return (100.0 * eer_from_rates(fnr, fpr)[0],
                min_dcf_from_rates(fnr, fpr, p_target, c_miss, c_fa))

    ones = np.ones((1, labels.size))
    point_a, point_b = stats(sorted_a, ones), stats(sorted_b, ones)
    tgt, non = np.flatnonzero(labels), np.flatnonzero(~labels)
    rng = np.random.default_rng(seed)
    diffs: tuple[list, list] = ([], [])
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        weights = (stratified_counts(rng, size, tgt, labels.size)
                   + stratified_counts(rng, size, non, labels.size)).astype(np.float64)
        a, b = stats(sorted_a, weights), stats(sorted_b, weights)
        for k in (0, 1):
            diffs[k].append(a[k] - b[k])
    out = {}
    for k, name in enumerate(("eer", "mindcf")):
        lo, hi, p = _interval(np.concatenate(diffs[k]), level)
        out[name] = PairedDifference(float(point_a[k][0]), float(point_b[k][0]),
                                     float(point_a[k][0] - point_b[k][0]), lo, hi, p,
                                     int(labels.size), n_boot)
    return out
