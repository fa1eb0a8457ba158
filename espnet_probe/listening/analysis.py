"""Human error rate of the triplet test per (model, training, set, layer), as scores.csv rows.

The error rate is wrong answers / answers, pooled over raters and triplets, with a Wilson 95 %
interval (the answers are treated as independent; raters differ, so the interval is optimistic
when a few raters give most answers). Chance is 0.5. A layer with no answers gets no row.
"""

from __future__ import annotations

import csv
from pathlib import Path

from espnet_probe.probe.speaker_id import wilson_interval
from espnet_probe.scoring.layer_scores import SCORE_COLUMNS
from espnet_probe.utils.fileio import atomic_open

METRIC = "human_error"
GROUP_KEYS = ("model", "training", "set", "layer")


def human_error_rows(groups: list[dict], answers: list[dict]) -> list[dict]:
    """One SCORE_COLUMNS row per group (in the given order) that has answers.

    ``groups``: dicts with model, training, set, layer, layer_index; ``answers``: dicts with the
    group keys and ``error`` (1 for a wrong answer, 0 for a right one)."""
    counts: dict[tuple, list[int]] = {}
    for a in answers:
        n_err = counts.setdefault(tuple(a[k] for k in GROUP_KEYS), [0, 0])
        n_err[0] += 1
        n_err[1] += int(a["error"])
    rows = []
    for g in groups:
        key = tuple(g[k] for k in GROUP_KEYS)
        if key not in counts:
            continue
        n, errors = counts.pop(key)
        lo, hi = wilson_interval(errors, n)
        rows.append({**{k: g[k] for k in GROUP_KEYS}, "layer_index": g["layer_index"],
                     "metric": METRIC, "value": errors / n, "ci_low": lo, "ci_high": hi, "n": n})
    if counts:
        raise ValueError(f"answers of groups that are not in the test: {sorted(counts)[:3]}")
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
    errors = sum(int(a["error"]) for a in answers)
    lo, hi = wilson_interval(errors, len(answers))
    raters = len({a["rater"] for a in answers})
    return (f"listening_test score: {len(answers)} answers from {raters} rater(s), "
            f"{len(rows)}/{n_groups} layer groups answered, overall human error "
            f"{errors / len(answers):.3f} [{lo:.3f}, {hi:.3f}] -> {out}")
