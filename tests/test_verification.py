"""EER / minDCF against hand-worked cases and scikit-learn; bootstrap; trial lists."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from espnet_probe.bin import make_trials as make_trials_cli
from espnet_probe.metrics.trials import (TrialsError, _pair_from_index, allocate, make_trials,
                                         read_trials, write_trials)
from espnet_probe.metrics.verification import (TrialScoreError, bootstrap, compute_eer,
                                               compute_min_dcf, error_rates, verification_result)


def labels_scores(targets, nontargets):
    scores = np.array(list(targets) + list(nontargets), dtype=float)
    labels = np.array([1] * len(targets) + [0] * len(nontargets))
    return scores, labels


# ------------------------------------------------------------------ EER / minDCF

def test_perfect_separation_gives_zero():
    s, l = labels_scores([0.9, 0.8, 0.7], [0.3, 0.2, 0.1])
    assert compute_eer(s, l)[0] == 0.0
    assert compute_min_dcf(s, l) == 0.0


def test_fully_inverted_gives_hundred_percent():
    s, l = labels_scores([0.1, 0.2, 0.3], [0.7, 0.8, 0.9])
    assert compute_eer(s, l)[0] == pytest.approx(1.0)
    # Best is to reject everything: cost p*c_miss, which normalises to exactly 1.
    assert compute_min_dcf(s, l) == pytest.approx(1.0)
    assert verification_result(s, l, n_boot=0)["eer"] == pytest.approx(100.0)


def test_constant_scores_are_chance():
    s = np.full(10, 0.5)
    l = np.array([1, 0] * 5)
    assert compute_eer(s, l)[0] == pytest.approx(0.5)


def test_hand_worked_case_with_horizontal_crossing():
    # Ascending: .05N .1N .2N .4T .6N .8T. Operating points (fnr, fpr):
    # (0,1) (0,.75) (0,.5) (0,.25) (.5,.25) (.5,0) (1,0). fnr-fpr turns positive between
    # (0,.25) and (.5,.25): halfway, fnr = .25 = fpr. Threshold halfway between .2 and .4.
    s, l = labels_scores([0.8, 0.4], [0.6, 0.2, 0.1, 0.05])
    eer, thr = compute_eer(s, l)
    assert eer == pytest.approx(0.25)
    assert thr == pytest.approx(0.3)
    thr_all, fnr, fpr = error_rates(s, l)
    np.testing.assert_allclose(fnr, [0, 0, 0, 0, .5, .5, 1])
    np.testing.assert_allclose(fpr, [1, .75, .5, .25, .25, 0, 0])
    assert thr_all[0] == -np.inf
    # minDCF, p=.01: costs .01*fnr + .99*fpr; smallest is (.5, 0): .005, over .01 -> .5
    assert compute_min_dcf(s, l) == pytest.approx(0.5)
    # p=.5: costs .5*(fnr+fpr) -> min .125 at (0,.25); normaliser .5 -> .25
    assert compute_min_dcf(s, l, p_target=0.5) == pytest.approx(0.25)
    # c_miss=10, p=.01: .1*fnr + .99*fpr; (.5,0) costs .05, the least; normaliser .1 -> .5
    assert compute_min_dcf(s, l, c_miss=10) == pytest.approx(0.05 / 0.1)


def test_ties_between_classes_move_together():
    # Groups: .1{N} .5{T,N} .9{T}: points (0,1) (0,.5) (.5,0) (1,0); the tie makes a diagonal
    # segment from (0,.5) to (.5,0) that crosses fnr=fpr at .25.
    s, l = labels_scores([0.5, 0.9], [0.5, 0.1])
    assert compute_eer(s, l)[0] == pytest.approx(0.25)
    # Order of tied trials must not matter
    s2, l2 = s[[1, 0, 3, 2]], l[[1, 0, 3, 2]]
    assert compute_eer(s2, l2)[0] == pytest.approx(0.25)


def sklearn_eer(scores, labels):
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    d = fnr - fpr  # sklearn sweeps thresholds downwards: d falls from +1 to -1
    i = int(np.flatnonzero(d <= 0)[0])
    a = d[i - 1] / (d[i - 1] - d[i])
    return fnr[i - 1] + a * (fnr[i] - fnr[i - 1])


@pytest.mark.parametrize("seed", range(6))
def test_eer_matches_sklearn_roc(seed):
    rng = np.random.default_rng(seed)
    n_t, n_n = rng.integers(50, 3000, size=2)
    s = np.concatenate([rng.normal(1.2, 1, n_t), rng.normal(0, 1.3, n_n)])
    l = np.array([1] * n_t + [0] * n_n)
    if seed % 2:
        s = np.round(s, 1)  # many ties across classes
    assert abs(compute_eer(s, l)[0] - sklearn_eer(s, l)) < 1e-3
    assert 0.1 < compute_eer(s, l)[0] < 0.5


def brute_min_dcf(s, l, p, cm, cf):
    best = np.inf
    for t in np.concatenate([[-np.inf], np.unique(s)]):
        acc = s > t
        fnr = np.mean(~acc[l == 1])
        fpr = np.mean(acc[l == 0])
        best = min(best, cm * p * fnr + cf * (1 - p) * fpr)
    return best / min(cm * p, cf * (1 - p))


@pytest.mark.parametrize("p,cm,cf", [(0.01, 1, 1), (0.05, 1, 1), (0.5, 2, 1), (0.01, 10, 1)])
def test_min_dcf_matches_brute_force(p, cm, cf):
    rng = np.random.default_rng(3)
    s = np.round(np.concatenate([rng.normal(2, 1, 300), rng.normal(0, 1, 400)]), 2)
    l = np.array([1] * 300 + [0] * 400)
    assert compute_min_dcf(s, l, p, cm, cf) == pytest.approx(brute_min_dcf(s, l, p, cm, cf))


def test_bad_inputs_are_rejected():
    with pytest.raises(TrialScoreError, match="non-finite"):
        compute_eer([0.1, np.nan], [1, 0])
    with pytest.raises(TrialScoreError, match="both target and non-target"):
        compute_eer([0.1, 0.2], [1, 1])
    with pytest.raises(TrialScoreError, match="equal length"):
        compute_eer([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(TrialScoreError, match="0/1"):
        compute_eer([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([0.1, 0.2], [1, 0], p_target=1.0)


def test_bootstrap_seeded_fast_and_sensible():
    rng = np.random.default_rng(0)
    s = np.concatenate([rng.normal(1, 1, 2000), rng.normal(0, 1, 2000)])
    l = np.array([1] * 2000 + [0] * 2000)
    bootstrap(s, l, n_boot=10)  # warm-up
    t0 = time.process_time()
    b = bootstrap(s, l, n_boot=1000, seed=5)
    cpu = time.process_time() - t0
    assert cpu < 1.0, f"1000 bootstrap replicates over 4000 trials took {cpu:.2f} s CPU"
    assert b["eer"].shape == (1000,) and b["mindcf"].shape == (1000,)
    np.testing.assert_array_equal(b["eer"], bootstrap(s, l, n_boot=1000, seed=5)["eer"])
    assert not np.array_equal(b["eer"], bootstrap(s, l, n_boot=1000, seed=6)["eer"])
    res = verification_result(s, l, n_boot=1000, seed=5)
    lo, hi = res["eer_ci"]
    assert lo < res["eer"] < hi
    # For 4000 trials the EER's standard error is about one percentage point.
    assert 0.5 < hi - lo < 6
    assert res["mindcf_ci"][0] <= res["mindcf"] <= res["mindcf_ci"][1]
    assert res["n_target"] == res["n_nontarget"] == 2000
    # Replicate EERs scatter around the point estimate (stratified resampling keeps classes).
    assert abs(np.median(b["eer"]) * 100 - res["eer"]) < 1.0


def test_bootstrap_of_a_perfect_system_stays_perfect():
    s, l = labels_scores(np.linspace(0.6, 1, 50), np.linspace(0, 0.4, 50))
    res = verification_result(s, l, n_boot=200)
    assert res["eer_ci"] == [0.0, 0.0] and res["mindcf_ci"] == [0.0, 0.0]


# ------------------------------------------------------------------ trials

def synthetic_utt2spk(sizes: list[int]) -> dict[str, str]:
    return {f"spk{s:02d}-utt{u:03d}": f"spk{s:02d}" for s, n in enumerate(sizes) for u in range(n)}


def check_trials(trials, utt2spk, n):
    assert trials.n_target == trials.n_nontarget == n
    seen = set()
    for a, b, t in trials.pairs:
        assert a != b
        key = (min(a, b), max(a, b))
        assert key not in seen
        seen.add(key)
        assert (utt2spk[a] == utt2spk[b]) == t


def test_pair_index_covers_the_upper_triangle():
    for n in (2, 3, 10, 257, 3000):
        i, j = _pair_from_index(np.arange(n * (n - 1) // 2), n)
        ri, rj = np.triu_indices(n, 1)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_array_equal(j, rj)


def test_allocate_water_fills_and_caps():
    rng = np.random.default_rng(0)
    a = allocate(10, np.array([1, 100, 100, 0]), None, rng)
    assert a[0] == 1 and a[3] == 0 and sorted(a[1:3]) == [4, 5]
    a = allocate(12, np.array([100, 100, 100]), np.array([1.0, 1.0, 2.0]), rng)
    np.testing.assert_array_equal(a, [3, 3, 6])
    with pytest.raises(TrialsError):
        allocate(5, np.array([1, 2]), None, rng)


def test_trials_balanced_over_speakers_and_seeded():
    utt2spk = synthetic_utt2spk([30, 30, 30, 30, 4])
    tr = make_trials(utt2spk, 500, seed=0)
    check_trials(tr, utt2spk, 500)
    per_spk = Counter(utt2spk[a] for a, b, t in tr.pairs if t)
    assert per_spk["spk04"] == 6  # only C(4,2)=6 target pairs exist: all used
    others = [per_spk[f"spk0{i}"] for i in range(4)]
    assert max(others) - min(others) <= 1 and sum(others) == 494
    # Non-targets: every speaker pair gets 50, so every speaker appears in 200
    appear = Counter(utt2spk[u] for a, b, t in tr.pairs if not t for u in (a, b))
    assert set(appear.values()) == {200}
    assert make_trials(utt2spk, 500, seed=0).pairs == tr.pairs
    assert make_trials(utt2spk, 500, seed=1).pairs != tr.pairs


def test_too_few_pairs_is_an_error_or_capped():
    utt2spk = synthetic_utt2spk([3, 3])  # 6 target pairs, 9 non-target pairs
    with pytest.raises(TrialsError, match="at most 6 target and 9 non-target"):
        make_trials(utt2spk, 7)
    tr = make_trials(utt2spk, 7, allow_fewer=True)
    check_trials(tr, utt2spk, 6)
    assert tr.info["requested"] == 7 and tr.info["n_per_class"] == 6
    with pytest.raises(TrialsError):
        make_trials(synthetic_utt2spk([5]), 1, allow_fewer=True)  # one speaker: no non-targets


def test_same_gender_nontargets():
    utt2spk = synthetic_utt2spk([12] * 6)
    genders = {f"spk{s:02d}": "f" if s < 4 else "m" for s in range(6)}
    any_g = make_trials(utt2spk, 300, genders=genders)
    assert any_g.info["cross_gender_nontargets"] > 100
    same = make_trials(utt2spk, 300, genders=genders, nontarget_gender="same")
    check_trials(same, utt2spk, 300)
    assert same.info["cross_gender_nontargets"] == 0
    appear = Counter(utt2spk[u] for a, b, t in same.pairs if not t for u in (a, b))
    assert max(appear.values()) - min(appear.values()) <= 2  # even per speaker across genders
    with pytest.raises(TrialsError, match="utt2gender or spk2gender"):
        make_trials(utt2spk, 10, nontarget_gender="same")


def test_trials_file_round_trip_and_errors(tmp_path):
    utt2spk = synthetic_utt2spk([5, 5, 5])
    tr = make_trials(utt2spk, 12)
    write_trials(tmp_path / "trials", tr)
    assert read_trials(tmp_path / "trials").pairs == tr.pairs
    for body, msg in [("a b target\na a target\n", ":2: utterance 'a' paired with itself"),
                      ("a b target\nb a nontarget\n", ":2: pair b a already on line 1"),
                      ("a b same\n", ":1: expected"), ("", "no trials")]:
        (tmp_path / "bad").write_text(body)
        with pytest.raises(TrialsError, match=msg):
            read_trials(tmp_path / "bad")


def test_make_trials_cli(tmp_path, capsys):
    d = tmp_path / "data"
    d.mkdir()
    utt2spk = synthetic_utt2spk([8, 8, 8, 8])
    (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(utt2spk.items())))
    (d / "spk2gender").write_text("spk00 f\nspk01 f\nspk02 m\nspk03 m\n")
    out = tmp_path / "trials"
    assert make_trials_cli.main(["--data_dir", str(d), "--out", str(out), "--n_per_class", "40",
                                 "--seed", "0", "--nontarget_gender", "same"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 80 and lines == sorted(lines)
    assert Counter(x.split()[2] for x in lines) == {"target": 40, "nontarget": 40}
    assert "40 target + 40 nontarget" in capsys.readouterr().err
    assert make_trials_cli.main(["--data_dir", str(d), "--out", str(out),
                                 "--n_per_class", "1000"]) == 1
    assert "--allow_fewer" in capsys.readouterr().err
