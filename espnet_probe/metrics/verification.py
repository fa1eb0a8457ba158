"""Speaker-verification error rates: exact EER, normalised minDCF and bootstrap intervals.

Conventions (one place, so every caller reports the same thing):
- A trial is accepted when its score is *strictly greater* than the threshold. Thresholds are
  swept over every gap between distinct scores plus the two extremes, so trials with equal
  scores are always accepted or rejected together (ties never favour one class).
- ``fnr`` (miss rate) and ``fpr`` (false-alarm rate) are fractions in [0, 1]; so is the EER
  returned here. Tools that write results convert the EER to percent and say so.
- EER: the ROC is the polyline through the (fpr, fnr) operating points; the EER is where that
  polyline crosses fnr == fpr, found by linear interpolation on the segment that crosses.
  Perfect separation gives 0, fully inverted scores give 1, constant scores give 0.5.
- minDCF: min over operating points of c_miss*p*fnr + c_fa*(1-p)*fpr, divided by the cost of
  the best trial-blind decision, min(c_miss*p, c_fa*(1-p)) (NIST SRE's normalisation).
  The minimum of a linear cost over the polyline sits at a vertex, so no interpolation.
- Bootstrap: targets and non-targets are resampled separately (stratified), so every replicate
  keeps the class sizes; CIs are percentile intervals. Trials that share utterances are not
  independent, so these intervals are somewhat optimistic; they are for comparing layers
  scored on the same trial list, not for absolute claims.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TrialScoreError(ValueError):
    """Scores and labels that cannot be evaluated (shape, NaN, a class missing)."""


@dataclass(frozen=True)
class Sorted:
    """Trials sorted by score with the index where each group of equal scores ends."""

    is_target: np.ndarray   # (n,) bool, in ascending score order
    group_ends: np.ndarray  # (G,) exclusive end of each distinct-score group
    unique_scores: np.ndarray  # (G,)
    order: np.ndarray       # (n,) trial indices in ascending score order


def checked_trials(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise TrialScoreError(f"scores {scores.shape} and labels {labels.shape} must be 1-D "
                              "and of equal length")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise TrialScoreError("labels must be boolean or 0/1 (1 = target)")
        labels = labels.astype(bool)
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise TrialScoreError(f"score of trial {bad} is {scores[bad]} (non-finite)")
    n_tgt = int(labels.sum())
    if n_tgt == 0 or n_tgt == labels.size:
        raise TrialScoreError(f"need both target and non-target trials, got {n_tgt} targets "
                              f"and {labels.size - n_tgt} non-targets")
    return scores, labels


def sort_trials(scores, labels) -> Sorted:
    scores, labels = checked_trials(scores, labels)
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    # A group ends wherever the next score differs (and at the very end).
    ends = np.flatnonzero(np.diff(s) > 0) + 1
    ends = np.append(ends, s.size)
    return Sorted(is_target=labels[order], group_ends=ends, unique_scores=s[ends - 1], order=order)


def weighted_error_rates(target_w: np.ndarray, nontarget_w: np.ndarray, group_ends: np.ndarray):
    """Miss and false-alarm rates per threshold for weighted trials in ascending score order.

    ``*_w`` are (B, n) trial weights (bootstrap counts; ones for the plain estimate). Column 0
    is the threshold below every score (accept all); column g+1 rejects groups 0..g.
    """
    cum_t = np.cumsum(target_w, axis=1)[:, group_ends - 1]
    cum_n = np.cumsum(nontarget_w, axis=1)[:, group_ends - 1]
    tot_t, tot_n = cum_t[:, -1:], cum_n[:, -1:]
    zeros = np.zeros((cum_t.shape[0], 1))
    fnr = np.hstack([zeros, cum_t / tot_t])
    fpr = np.hstack([np.ones_like(zeros), 1.0 - cum_n / tot_n])
    return fnr, fpr


def eer_from_rates(fnr: np.ndarray, fpr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EER per row by interpolating the crossing; also the crossing column k and the fraction
    alpha of the way from column k-1 to k where it happens."""
    diff = fnr - fpr  # rises from -1 (accept all) to +1 (reject all)
    k = np.argmax(diff >= 0, axis=1)  # first column at or past the crossing; always >= 1
    rows = np.arange(fnr.shape[0])
    d0, d1 = diff[rows, k - 1], diff[rows, k]
    alpha = -d0 / (d1 - d0)  # d0 < 0 <= d1, so the denominator is positive
    eer = fnr[rows, k - 1] + alpha * (fnr[rows, k] - fnr[rows, k - 1])
    return eer, k, alpha


def min_dcf_from_rates(fnr, fpr, p_target: float, c_miss: float, c_fa: float):
    cost = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return cost.min(axis=1) / norm


def check_dcf_params(p_target: float, c_miss: float, c_fa: float) -> None:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")


def error_rates(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, fnr, fpr) at every operating point; thresholds[0] = -inf (accept all),
    thresholds[g+1] = the g-th distinct score (accept only scores above it)."""
    st = sort_trials(scores, labels)
    ones = np.ones((1, st.is_target.size))
    fnr, fpr = weighted_error_rates(ones * st.is_target, ones * ~st.is_target, st.group_ends)
    return np.concatenate([[-np.inf], st.unique_scores]), fnr[0], fpr[0]


def compute_eer(scores, labels) -> tuple[float, float]:
    """EER as a fraction, and a threshold at the crossing (interpolated between scores)."""
    thr, fnr, fpr = error_rates(scores, labels)
    eer, k, alpha = eer_from_rates(fnr[None], fpr[None])
    k, alpha = int(k[0]), float(alpha[0])
    lo = thr[k - 1] if np.isfinite(thr[k - 1]) else thr[k]
    return float(eer[0]), float(lo + alpha * (thr[k] - lo))


def compute_min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0,
                    c_fa: float = 1.0) -> float:
    check_dcf_params(p_target, c_miss, c_fa)
    _, fnr, fpr = error_rates(scores, labels)
    return float(min_dcf_from_rates(fnr[None], fpr[None], p_target, c_miss, c_fa)[0])


def stratified_counts(rng: np.random.Generator, n_boot: int, members: np.ndarray,
                       n_total: int) -> np.ndarray:
    """(n_boot, n_total) resampling counts that draw len(members) trials from ``members``."""
    m = members.size
    draws = rng.integers(0, m, size=(n_boot, m))
    flat = (draws + np.arange(n_boot)[:, None] * m).ravel()
    counts = np.bincount(flat, minlength=n_boot * m).reshape(n_boot, m)
    out = np.zeros((n_boot, n_total), dtype=np.int32)
    out[:, members] = counts
    return out


def bootstrap(scores, labels, n_boot: int = 1000, seed: int = 0, p_target: float = 0.01,
              c_miss: float = 1.0, c_fa: float = 1.0, chunk: int = 250) -> dict[str, np.ndarray]:
    """EER and minDCF of ``n_boot`` stratified bootstrap replicates (vectorised in chunks)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    check_dcf_params(p_target, c_miss, c_fa)
    st = sort_trials(scores, labels)
    n = st.is_target.size
    tgt, non = np.flatnonzero(st.is_target), np.flatnonzero(~st.is_target)
    rng = np.random.default_rng(seed)
    eers, dcfs = [], []
    for start in range(0, n_boot, chunk):  # bounds memory at chunk * n_trials per matrix
        b = min(chunk, n_boot - start)
        fnr, fpr = weighted_error_rates(stratified_counts(rng, b, tgt, n),
                                        stratified_counts(rng, b, non, n), st.group_ends)
        eers.append(eer_from_rates(fnr, fpr)[0])
        dcfs.append(min_dcf_from_rates(fnr, fpr, p_target, c_miss, c_fa))
    return {"eer": np.concatenate(eers), "mindcf": np.concatenate(dcfs)}


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def verification_result(scores, labels, n_boot: int = 1000, seed: int = 0,
                        p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> dict:
    """Everything a result.json reports. EER in percent; minDCF normalised (unitless)."""
    scores, labels = checked_trials(scores, labels)
    eer, thr = compute_eer(scores, labels)
    dcf = compute_min_dcf(scores, labels, p_target, c_miss, c_fa)
    out = {"eer": 100.0 * eer, "eer_threshold": thr, "mindcf": dcf,
           "n_target": int(labels.sum()), "n_nontarget": int((~labels).sum()),
           "p_target": p_target, "c_miss": c_miss, "c_fa": c_fa,
           "n_boot": n_boot, "seed": seed,
           "units": {"eer": "percent", "mindcf": "normalised DCF"}}
    if n_boot > 0:
        boots = bootstrap(scores, labels, n_boot, seed, p_target, c_miss, c_fa)
        lo, hi = percentile_ci(boots["eer"])
        out["eer_ci"] = [100.0 * lo, 100.0 * hi]
        out["mindcf_ci"] = list(percentile_ci(boots["mindcf"]))
    else:
        out["eer_ci"] = out["mindcf_ci"] = None
    return out
