"""Paired bootstrap tests: their intervals cover the true difference at about the nominal rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from espnet_probe.metrics.paired import (PairedTestError, paired_mean_difference,
                                         paired_verification_difference)


def test_paired_mean_difference_covers_the_true_difference_at_the_nominal_rate():
    """Utterances differ a lot (shared difficulty), systems differ a little: the paired interval
    covers the true 0.02 in about 95 % of simulated test sets, and is far narrower than the
    utterance spread."""
    rng = np.random.default_rng(0)
    covered, widths, n_sims = 0, [], 300
    for k in range(n_sims):
        difficulty = rng.normal(0.0, 0.1, 60)
        a = 0.80 + difficulty + rng.normal(0, 0.02, 60)
        b = 0.78 + difficulty + rng.normal(0, 0.02, 60)
        r = paired_mean_difference(a, b, n_boot=500, seed=k)
        covered += r.ci_low <= 0.02 <= r.ci_high
        widths.append(r.ci_high - r.ci_low)
    assert 0.90 <= covered / n_sims <= 0.99, covered / n_sims
    assert np.median(widths) < 0.02  # two marginal 95% CIs (~0.05 wide each) would overlap


def test_paired_mean_difference_reports_the_difference_and_refuses_unpaired_input():
    r = paired_mean_difference([1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5], n_boot=200)
    assert r.diff == pytest.approx(0.5) and r.ci_low == pytest.approx(0.5)
    assert r.significant and r.p == 0.0 and r.n == 4
    same = paired_mean_difference([1.0, 2.0, 3.0], [1.1, 1.9, 3.0], n_boot=500)
    assert not same.significant and same.p > 0.05
    with pytest.raises(PairedTestError, match="equal length"):
        paired_mean_difference([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(PairedTestError, match="finite"):
        paired_mean_difference([1.0, float("nan")], [1.0, 2.0])


def _simulated_trials(rng, n_spk=8, per_spk=15, n_per_class=600):
    spk = np.repeat(np.arange(n_spk), per_spk)
    n = spk.size
    i, j = np.triu_indices(n, 1)
    same = spk[i] == spk[j]
    tgt = rng.choice(np.flatnonzero(same), n_per_class, replace=False)
    non = rng.choice(np.flatnonzero(~same), n_per_class, replace=False)
    chosen = np.concatenate([tgt, non])
    return i[chosen], j[chosen], same[chosen], n


def _system(rng, left, right, labels, n_utts, shift, utt_effect, sd_utt, sd_trial):
    own = rng.normal(0, sd_utt * 0.3, n_utts)  # a little utterance effect of its own
    return (shift * labels + utt_effect[left] + utt_effect[right] + own[left] + own[right]
            + rng.normal(0, sd_trial, labels.size))


def test_paired_eer_difference_covers_the_true_difference_at_about_the_nominal_rate():
    """Scores with strong per-utterance effects (trials share utterances), mostly shared by the
    two systems as for two layers heard on the same audio: the paired trial bootstrap's interval
    covers the true difference at about the nominal rate.  Population EER of each system is analytic:
    target ~ N(m, s^2), non-target ~ N(0, s^2) -> EER = Phi(-m / 2s)."""
    rng = np.random.default_rng(1)
    sd_utt, sd_trial = 0.5, 0.5
    s = math.sqrt(2 * sd_utt**2 * (1 + 0.3**2) + sd_trial**2)
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    m_a, m_b = 1.6, 2.0
    true = 100 * (phi(-m_a / (2 * s)) - phi(-m_b / (2 * s)))
    covered, n_sims = 0, 120
    for k in range(n_sims):
        left, right, labels, n_utts = _simulated_trials(rng)
        utt_effect = rng.normal(0, sd_utt, n_utts)
        a = _system(rng, left, right, labels, n_utts, m_a, utt_effect, sd_utt, sd_trial)
        b = _system(rng, left, right, labels, n_utts, m_b, utt_effect, sd_utt, sd_trial)
        r = paired_verification_difference(a, b, labels, n_boot=300, seed=k)["eer"]
        covered += r.ci_low <= true <= r.ci_high
    assert 0.88 <= covered / n_sims <= 0.995, (covered / n_sims, true)


def test_paired_eer_difference_of_identical_systems_is_zero_and_mindcf_is_reported():
    rng = np.random.default_rng(2)
    left, right, labels, n_utts = _simulated_trials(rng, n_per_class=200)
    scores = labels * 2.0 + rng.normal(0, 1, labels.size)
    r = paired_verification_difference(scores, scores, labels, n_boot=100)
    assert r["eer"].diff == 0 and r["eer"].ci_low == 0 and r["eer"].ci_high == 0
    assert not r["eer"].significant and 0 < r["eer"].value_a < 50
    assert set(r) == {"eer", "mindcf"} and r["mindcf"].diff == 0
    with pytest.raises(PairedTestError, match="not the same trials"):
        paired_verification_difference(scores, scores[:-1], labels)
