"""Human error rate and its interval (rater x triplet bootstrap, never narrower than Wilson)
against hand counts and simulated listeners; export and score CLIs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from espnet_probe.bin import listening_test
from espnet_probe.listening.analysis import error_interval, human_error_rows
from espnet_probe.listening.store import EXPORT_COLUMNS, Store
from espnet_probe.metrics.proportion import wilson_interval
from espnet_probe.scoring.layer_scores import read_scores
from tests.listening_support import make_db

GROUPS = [{"model": "m", "training": "baseline", "set": "test", "layer": layer, "layer_index": i}
          for i, layer in enumerate(("input", "deep", "unheard"))]


def answers(layer: str, errors: int, n: int, rater_offset: int = 0) -> list[dict]:
    """n answers, each from its own rater to its own triplet, the first ``errors`` wrong."""
    return [{"model": "m", "training": "baseline", "set": "test", "layer": layer,
             "error": int(k < errors), "rater": rater_offset + k, "trial": rater_offset + k}
            for k in range(n)]


def crossed(errors: np.ndarray) -> list[dict]:
    """Answers of a full rater x triplet test: errors[r, t] = 1 when rater r got triplet t wrong."""
    return [{"rater": r, "trial": t, "error": int(errors[r, t])}
            for r in range(errors.shape[0]) for t in range(errors.shape[1])]


def test_error_rate_by_hand_and_interval_never_narrower_than_wilson():
    rows = human_error_rows(GROUPS, answers("deep", 2, 10) + answers("input", 0, 4)
                            + answers("input", 1, 1, rater_offset=4))
    # in test order, the group without answers left out
    assert [(r["layer"], r["layer_index"], r["n"]) for r in rows] == [("input", 0, 5), ("deep", 1, 10)]
    inp, deep = rows
    assert inp["metric"] == deep["metric"] == "human_error"
    assert inp["value"] == pytest.approx(1 / 5) and deep["value"] == pytest.approx(2 / 10)
    # Wilson 95 % for 2 of 10, worked by hand: centre (0.2 + z^2/20) / (1 + z^2/10),
    # half-width z / (1 + z^2/10) * sqrt(0.016 + z^2/400) with z = 1.96
    assert wilson_interval(2, 10) == pytest.approx((0.0567, 0.5098), abs=1e-4)
    assert wilson_interval(1, 5) == pytest.approx((0.0362, 0.6245), abs=1e-4)
    for row, (errors, n) in ((deep, (2, 10)), (inp, (1, 5))):
        low, high = wilson_interval(errors, n)
        assert row["ci_low"] <= low and row["ci_high"] >= high
    all_wrong = human_error_rows(GROUPS[:1], answers("input", 3, 3))[0]
    # the percentile bootstrap alone would be the point [1, 1]; Wilson keeps it honest
    assert all_wrong["value"] == 1.0 and all_wrong["ci_high"] == 1.0
    assert all_wrong["ci_low"] == pytest.approx(wilson_interval(3, 3)[0])
    assert human_error_rows(GROUPS, answers("deep", 2, 10)) == human_error_rows(
        GROUPS, answers("deep", 2, 10))  # a fixed seed per group: re-scoring is reproducible
    with pytest.raises(ValueError, match="not in the test"):
        human_error_rows(GROUPS[:1], answers("deep", 1, 1))


def test_one_careless_rater_widens_the_interval():
    # rater 0 answers every triplet wrong, rater 1 every one right: the pooled 0.5 rests on
    # two people, and the interval must say so (Wilson over 10 answers: [0.24, 0.76])
    low, high = error_interval(crossed(np.array([[1] * 5, [0] * 5])))
    assert low <= 0.05 and high >= 0.95


def test_one_hard_triplet_widens_the_interval():
    # all 10 raters miss triplet 0 and get triplets 1-4 right: 0.2 rests on five triplets
    errors = np.zeros((10, 5), dtype=int)
    errors[:, 0] = 1
    low, high = error_interval(crossed(errors))
    assert low == 0.0 and high >= 0.5
    assert wilson_interval(10, 50) == pytest.approx((0.112, 0.330), abs=1e-3)  # far too narrow


def test_coverage_on_simulated_listeners_with_rater_and_triplet_effects():
    # Listeners and triplets differ (logistic random effects, sd 1 each): the 95 % interval
    # must cover the population error rate about 95 % of the time. Pooled Wilson does not
    # (0.705 on this seed), the crossed bootstrap does (0.955).
    rng = np.random.default_rng(7)
    base, n_raters, n_trials, n_sim = -0.85, 10, 10, 200
    population = 1 / (1 + np.exp(-(base + rng.normal(0, 1, (2000, 1)) + rng.normal(0, 1, 400))))
    truth = population.mean()
    covered_boot = covered_wilson = 0
    for sim in range(n_sim):
        logit = base + rng.normal(0, 1, (n_raters, 1)) + rng.normal(0, 1, (1, n_trials))
        errors = rng.random((n_raters, n_trials)) < 1 / (1 + np.exp(-logit))
        low, high = error_interval(crossed(errors), seed=sim)
        covered_boot += low <= truth <= high
        low, high = wilson_interval(int(errors.sum()), errors.size)
        covered_wilson += low <= truth <= high
    assert covered_boot / n_sim >= 0.90
    assert covered_wilson / n_sim <= 0.85  # the reason for the bootstrap


def test_export_and_score_cli(tmp_path, capsys):
    db = make_db(tmp_path, per_layer=4)  # layers input and deep, 4 triplets each
    expected = {}
    with Store(db) as s:
        truth = dict(s.conn.execute("SELECT id, answer FROM trials").fetchall())
        layer_of = dict(s.conn.execute("SELECT id, layer FROM trials").fetchall())
        for rater_no in range(3):
            rater = s.add_rater("=HYPERLINK(\"x\")" if rater_no == 0 else f"rater {rater_no}")
            while (nxt := s.next_trial(rater.id)) is not None:
                # rater k gets a known set of trials wrong
                wrong = (nxt.trial + rater_no) % 3 == 0
                flip = {"A": "B", "B": "A"}
                s.submit_answer(rater.id, nxt.trial, flip[truth[nxt.trial]] if wrong else truth[nxt.trial])
                n, e = expected.get(layer_of[nxt.trial], (0, 0))
                expected[layer_of[nxt.trial]] = (n + 1, e + wrong)
    answers_csv = tmp_path / "answers.csv"
    assert listening_test.main(["export", "--db", str(db), "--out", str(answers_csv)]) == 0
    with open(answers_csv, newline="") as f:
        exported = list(csv.DictReader(f))
    assert tuple(exported[0]) == EXPORT_COLUMNS and len(exported) == 24
    assert exported[0]["rater_name"].startswith("'=")  # no formula in a spreadsheet
    assert all(int(r["error"]) == (r["choice"] != r["answer"]) for r in exported)
    assert all(r["speaker_a"] != r["speaker_b"] and r["speaker_x"] in (r["speaker_a"], r["speaker_b"])
               for r in exported)

    capsys.readouterr()
    assert listening_test.main(["score", "--db", str(db)]) == 0
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and "24 answers from 3 rater(s), 2/2 layer groups" in summary
    rows = read_scores(db.parent / "scores.csv")  # the layout every scores.csv has
    assert [(r["model"], r["training"], r["set"], r["layer"], r["layer_index"], r["metric"])
            for r in rows] == [("toy", "baseline", "test", "input", "0", "human_error"),
                               ("toy", "baseline", "test", "deep", "1", "human_error")]
    for r in rows:
        n, errors = expected[r["layer"]]
        assert int(r["n"]) == n == 12
        assert float(r["value"]) == pytest.approx(errors / n)
        assert float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"])
    out_dir = tmp_path / "elsewhere"
    assert listening_test.main(["score", "--db", str(db), "--out_dir", str(out_dir)]) == 0
    assert read_scores(out_dir / "scores.csv") == rows
