"""Human error rate of the triplet test per (model, training, set, layer), as scores.csv rows.

The error rate is wrong answers / answers. Its 95 % interval must respect how the answers were
made: every rater hears the same triplets, so answers are crossed by rater and by triplet and
are not independent. A careless rater or a hard triplet moves many answers at once. A Wilson
interval over all answers would be too narrow. The interval is therefore a two-way (rater x
triplet) bootstrap: raters and triplets are resampled independently and each replicate keeps
every answer of a drawn rater to a drawn triplet. This bootstrap is conservative for crossed
data (Owen 2007, "The pigeonhole bootstrap"). It is widened to the Wilson interval where that is
wider: when all answers agree, the percentile bootstrap collapses to a point. Simulated
coverage (tests/test_listening_analysis.py): 0.955 where Wilson gets 0.705 when raters and
triplets differ. The price comes when they do not differ: the interval is then ~1.65x Wilson's
width. Chance is 0.5. A layer with no answers gets no row.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np

from espnet_probe.metrics.proportion import wilson_interval
from espnet_probe.scoring.layer_scores import SCORE_COLUMNS
from espnet_probe.utils.fileio import atomic_open

METRIC = "human_error"
GROUP_KEYS = ("model", "training", "set", "layer")
N_BOOT = 2000


def crossed_bootstrap_interval(answers: list[dict], n_boot: int = N_BOOT, seed: int = 0,
                               level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the error rate, resampling raters and triplets independently."""
    raters = {r: i for i, r in enumerate(sorted({a["rater"] for a in answers}))}
    trials = {t: i for i, t in enumerate(sorted({a["trial"] for a in answers}))}
    errors = np.zeros((len(raters), len(trials)))
    counts = np.zeros((len(raters), len(trials)))
    for a in answers:
        cell = raters[a["rater"]], trials[a["trial"]]
        counts[cell] += 1
        errors[cell] += int(a["error"])
    rng = np.random.default_rng(seed)
    # multiplicity of each rater / triplet in each replicate
    rater_draws = rng.multinomial(len(raters), np.full(len(raters), 1 / len(raters)), n_boot)
    trial_draws = rng.multinomial(len(trials), np.full(len(trials), 1 / len(trials)), n_boot)
    wrong = np.einsum("br,rt,bt->b", rater_draws, errors, trial_draws)
    answered = np.einsum("br,rt,bt->b", rater_draws, counts, trial_draws)
    # a sparse design (each rater a few triplets) can draw no answered pair: skip such replicates
    rates = wrong[answered > 0] / answered[answered > 0]
    tail = (1 - level) / 2
    return float(np.quantile(rates, tail)), float(np.quantile(rates, 1 - tail))


def count_errors(answers: list[dict]) -> tuple[int, int]:
    """(answers, wrong answers)."""
    return len(answers), sum(int(a["error"]) for a in answers)


def error_interval(answers: list[dict], seed: int = 0) -> tuple[float, float]:
    """The wider of the crossed bootstrap and the Wilson interval (see the module docstring)."""
    n, errors = count_errors(answers)
    wilson_low, wilson_high = wilson_interval(errors, n)
    boot_low, boot_high = crossed_bootstrap_interval(answers, seed=seed)
    return min(wilson_low, boot_low), max(wilson_high, boot_high)


def _group_seed(key: tuple) -> int:
    """A fixed seed per group: re-scoring the same answers gives the same intervals."""
    return zlib.crc32("\t".join(map(str, key)).encode())


def human_error_rows(groups: list[dict], answers: list[dict]) -> list[dict]:
    """One SCORE_COLUMNS row per group (in the given order) that has answers.

    ``groups``: dicts with model, training, set, layer, layer_index; ``answers``: dicts with the
    group keys, ``rater``, ``trial`` and ``error`` (1 for a wrong answer, 0 for a right one)."""
    by_group: dict[tuple, list[dict]] = {}
    for a in answers:
        by_group.setdefault(tuple(a[k] for k in GROUP_KEYS), []).append(a)
    rows = []
    for g in groups:
        key = tuple(g[k] for k in GROUP_KEYS)
        if key not in by_group:
            continue
        group_answers = by_group.pop(key)
        n, errors = count_errors(group_answers)
        lo, hi = error_interval(group_answers, seed=_group_seed(key))
        rows.append({**{k: g[k] for k in GROUP_KEYS}, "layer_index": g["layer_index"],
                     "metric": METRIC, "value": errors / n, "ci_low": lo, "ci_high": hi, "n": n})
    if by_group:
        raise ValueError(f"answers of groups that are not in the test: {sorted(by_group)[:3]}")
    return rows


def write_human_scores(path: Path, rows: list[dict]) -> None:
    """``path`` in the layout of every experiment's scores.csv (rows carry their own model and
    training: one test spans several experiments)."""
    with atomic_open(path) as f:
        w = csv.DictWriter(f, fieldnames=SCORE_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def summary_line(answers: list[dict], rows: list[dict], n_groups: int, out: Path) -> str:
    if not answers:
        return f"listening_test score: no answers yet; {out} has a header only"
    n, errors = count_errors(answers)
    lo, hi = error_interval(answers)
    raters = len({a["rater"] for a in answers})
    return (f"listening_test score: {n} answers from {raters} rater(s), "
            f"{len(rows)}/{n_groups} layer groups answered, overall human error "
            f"{errors / n:.3f} [{lo:.3f}, {hi:.3f}] -> {out}")
