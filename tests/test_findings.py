"""The report's paired tests and generated findings, on synthetic scores with known differences."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from espnet_probe.bin import make_report
from espnet_probe.report.comparisons import read_comparisons
from espnet_probe.scoring.layer_scores import write_scores

LAYERS = ("input", "cnn1", "blstm1")
SETS = ("test", "test_snr0")
N_UTTS = 40
# mean STOI per (training, set, layer); the per-utterance values add a shared difficulty
STOI = {
    ("baseline", "test"): (0.950, 0.940, 0.600),
    ("baseline", "test_snr0"): (0.700, 0.690, 0.500),
    ("robust", "test"): (0.950, 0.940, 0.600),
    ("robust", "test_snr0"): (0.700, 0.690, 0.400),   # robust keeps less noise at blstm1
    ("random", "test"): (0.950, 0.900, 0.750),        # random cnn1 loses 0.05: the check fails
}
ORACLE_STOI = {"test": 0.955, "test_snr0": 0.705}
# target-score shift per layer (speaker separation) for the GE2E trials
SEPARATION = {"baseline": (4.0, 4.0, 0.3), "robust": (4.0, 4.0, 0.3), "random": (4.0, 4.0, 4.0),
              "oracle": (4.0,)}


def _trials(rng):
    spk = np.repeat(np.arange(8), N_UTTS // 8)
    i, j = np.triu_indices(N_UTTS, 1)
    same = spk[i] == spk[j]
    pick = np.concatenate([np.flatnonzero(same), rng.choice(np.flatnonzero(~same), 300, replace=False)])
    return i[pick], j[pick], same[pick]


def _write_exp(root: Path, name: str, model: str, training: str, layers, stoi: dict, trials, rng,
               difficulty):
    exp = root / name
    rows = []
    left, right, labels = trials
    for set_name, means in stoi.items():
        for k, layer in enumerate(layers):
            job = exp / f"score_{set_name}" / layer
            (job / "quality").mkdir(parents=True)
            values = np.clip(means[k] + difficulty + rng.normal(0, 0.005, N_UTTS), 0, 1)
            (job / "quality" / "stoi").write_text(
                "".join(f"utt{u:02d} {float(v)!r}\n" for u, v in enumerate(values)))
            (job / "speaker_ge2e").mkdir()
            scores = SEPARATION[training or "oracle"][k] * labels + rng.normal(0, 1, labels.size)
            (job / "speaker_ge2e" / "scores").write_text("".join(
                f"utt{a:02d} utt{b:02d} {s:.6f} {'target' if t else 'nontarget'}\n"
                for a, b, s, t in zip(left, right, scores, labels)))
            rows.append({"set": set_name, "layer": layer, "layer_index": k, "metric": "stoi",
                         "value": float(values.mean()), "ci_low": "", "ci_high": "", "n": N_UTTS})
    write_scores(exp / "scores.csv", rows, model, training)
    return exp / "scores.csv"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    rng = np.random.default_rng(0)
    trials = _trials(rng)
    difficulty = rng.normal(0, 0.03, N_UTTS)
    scores = []
    for training in ("baseline", "robust", "random"):
        stoi = {s: STOI[(training, s)] for s in SETS if (training, s) in STOI}
        scores.append(_write_exp(root, f"probe_m_{training}", "m", training, LAYERS, stoi, trials,
                                 rng, difficulty))
    scores.append(_write_exp(root, "probe_oracle", "oracle", "", ("original",),
                             {s: (v,) for s, v in ORACLE_STOI.items()}, trials, rng, difficulty))
    (root / "probe_m_baseline" / "probe_training.json").write_text(json.dumps(
        {"epochs": 4, "layers": {layer: {"best_epoch": 3, "valid_l1": 0.5, "converged": layer != "blstm1",
                                         "valid_curve": [1.0, 0.7, 0.5, 0.51], "train_curve": []}
                                 for layer in LAYERS}, "mean_valid_l1": [1, 0.7, 0.5, 0.51]}))
    # speaker-ID probes: 60 held-out utterances; trained blstm1 gets 30 right, random 57
    sid = []
    for training, right in (("baseline", (60, 60, 30)), ("random", (60, 60, 57))):
        d = root / f"sid_{training}"
        d.mkdir()
        with open(d / "per_utterance.csv", "w") as f:
            f.write("layer,utt,speaker,predicted,correct\n")
            for layer, n_right in zip(LAYERS, right):
                f.writelines(f"{layer},h{u:02d},s,s,{int(u < n_right)}\n" for u in range(60))
        (d / "results.csv").write_text("layer,layer_index,accuracy,ci_low,ci_high,n\n" + "".join(
            f"{layer},{k},{n / 60},0,1,60\n" for k, (layer, n) in enumerate(zip(LAYERS, right))))
        sid.append(f"m:{training}:{d / 'results.csv'}")
    out = root / "report"
    assert make_report.main(["--out", str(out), "--scores", *map(str, scores), "--n_boot", "500",
                             "--speaker_id", *sid]) == 0
    return out


def _find(rows, **want):
    hits = [r for r in rows if all(r[k] == v for k, v in want.items())]
    assert len(hits) == 1, (want, hits)
    return hits[0]


def test_paired_tests_mark_exactly_the_known_differences(report):
    rows = read_comparisons(report / "comparisons.csv")
    stoi = [r for r in rows if r["metric"] == "stoi"]
    control = {r["a_layer"]: r for r in stoi if r["comparison"] == "control"
               and r["a_training"] == "baseline" and r["condition"] == "clean"}
    assert control["blstm1"]["significant"] == "1"
    assert float(control["blstm1"]["diff"]) == pytest.approx(-0.15, abs=0.01)
    assert control["input"]["significant"] == "0"
    rb = {(r["condition"], r["a_layer"]): r for r in stoi if r["comparison"] == "robust_vs_baseline"}
    assert rb[("snr0", "blstm1")]["significant"] == "1" and float(rb[("snr0", "blstm1")]["diff"]) < 0
    assert all(r["significant"] == "0" for k, r in rb.items() if k != ("snr0", "blstm1"))
    depth = _find(stoi, comparison="depth", a_training="baseline", condition="clean", a_layer="blstm1")
    assert depth["b_layer"] == "cnn1" and depth["significant"] == "1"
    # EER: trained blstm1 separates speakers far worse than the random encoder's
    eer = _find(rows, comparison="control", metric="eer_ge2e", a_training="baseline",
                condition="clean", a_layer="blstm1")
    assert eer["significant"] == "1" and float(eer["diff"]) > 20
    sid = {r["a_layer"]: r for r in rows if r["metric"] == "speaker_id_acc" and r["comparison"] == "control"}
    assert sid["blstm1"]["significant"] == "1" and float(sid["blstm1"]["diff"]) == pytest.approx(-45.0)
    assert sid["input"]["significant"] == "0" and sid["input"]["n"] == "60"
    # only the two trained models and the control have depth rows; the oracle none
    assert {r["model"] for r in rows} == {"m"}
    with open(report / "comparisons.csv", newline="") as f:
        assert next(csv.reader(f))[:4] == ["comparison", "model", "condition", "metric"]


def test_generated_findings_state_the_tests_and_the_strength_verdicts(report):
    text = (report / "RESULTS.md").read_text()
    findings = text.split("## What it shows (generated from the paired tests)")[1].split("\n## ")[0]
    assert "m baseline, clean: the `input` probe gets STOI" in findings
    assert "(within 0.01 asked)" in findings and "**passes** (within 0.01" in findings
    assert "first layer `cnn1`" in findings and "**fails** (within 0.03 asked)" in findings
    stoi = findings.split("**STOI**")[1].split("**speaker-ID")[0]
    # random cnn1 is 0.04 below the trained one, its blstm1 0.15 above
    assert "m, clean: baseline is higher than random at cnn1 (+0.0" in stoi
    assert "lower at blstm1 (-0.15" in stoi and "indistinguishable at 1 of 3 layers" in stoi
    assert "m, snr0: robust is higher than baseline at none; lower at blstm1 (-0." in stoi
    assert "m, clean: robust is higher than baseline at none; lower at none; indistinguishable at 3 of 3" in stoi
    eer = findings.split("**EER (GE2E)**")[1].split("**STOI**")[0]
    assert "m baseline, clean: rises at cnn1->blstm1" in eer
    assert "- m, clean: baseline is higher than random at none; lower at blstm1 (-45.0)" in findings
    assert "## Paired tests" in text and "| m | baseline - random | clean |" in text
    assert "Probes still improving when training stopped: probe_m_baseline:blstm1." in text
    assert (report / "probe_curves.png").stat().st_size > 1000


def test_depth_trend_is_spearmans_rho_of_the_eer_against_layer_depth():
    import numpy as np
    from scipy.stats import spearmanr

    from espnet_probe.report.findings import depth_trend_lines, spearman_rho

    rng = np.random.default_rng(0)
    for _ in range(20):  # ties included: values on a coarse grid
        values = list(rng.integers(0, 6, size=9).astype(float))
        expected = spearmanr(np.arange(9), values).statistic
        assert abs(spearman_rho(values) - (0.0 if np.isnan(expected) else expected)) < 1e-9

    def rows(training, eers, condition="clean"):
        return [{"model": "m", "training": training, "condition": condition, "layer": f"l{i}",
                 "layer_index": i, "metric": "eer_ge2e", "value": v} for i, v in enumerate(eers)]

    score_rows = (rows("baseline", [2.0, 1.0, 5.0, 20.0, 30.0, 45.0])  # one dip: rho 0.94
                  + rows("random", [2.0, 40.0, 10.0, 45.0, 5.0, 30.0])  # no order
                  + rows("baseline", [1.0, 2.0], "snr0")  # too few layers to judge
                  + [{"model": "original", "training": "", "condition": "clean", "layer": "audio",
                      "layer_index": 0, "metric": "eer_ge2e", "value": 1.0}])
    lines = depth_trend_lines(score_rows)
    assert len(lines) == 2
    assert lines[0].startswith("- m baseline, clean: rho = +0.94 over 6 layers (2.0 at the input, "
                               "45.0 at the last layer): **rises with depth**")
    assert lines[1].startswith("- m random, clean: rho = +0.26") and "**no monotone rise**" in lines[1]
