"""Triplet rules, seeding, clear errors, and ``listening_test make`` on synthetic and real
experiments."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter

import pytest

from espnet_probe.bin import listening_test
from espnet_probe.experiments import plan, write_plan
from espnet_probe.listening.store import Store, StoreError, build_db
from espnet_probe.listening.triplets import ListeningTestError, build_test, draw_triplets
from espnet_probe.scoring.layer_scores import probe_exp_labels
from espnet_probe.utils.kaldi_dir import DataDirError
from tests.conftest import REPO
from tests.listening_support import make_experiment


def check_rules(triplets):
    for t in triplets:
        assert t.a.speaker != t.b.speaker
        assert t.x.utt not in (t.a.utt, t.b.utt)
        assert t.x.speaker in (t.a.speaker, t.b.speaker)
        assert t.answer == ("A" if t.x.speaker == t.a.speaker else "B")


@pytest.mark.parametrize("n", [1, 4, 7, 40])
def test_draw_rules_and_balance(n):
    by_speaker = {"s1": ["u1", "u2"], "s2": ["v1", "v2", "v3"], "s3": ["w1", "w2"]}
    speaker = {u: s for s, us in by_speaker.items() for u in us}
    for seed in range(20):
        items = draw_triplets(by_speaker, n, random.Random(seed), "here")
        assert len(items) == n
        targets = Counter()
        for a, b, x in items:
            assert speaker[a] != speaker[b] and x not in (a, b)
            assert speaker[x] in (speaker[a], speaker[b])
            targets["A" if speaker[x] == speaker[a] else "B"] += 1
        assert abs(targets["A"] - targets["B"]) <= n % 2


def test_draw_errors():
    with pytest.raises(ListeningTestError, match=r"here: 1 speaker\(s\) \(s1\)"):
        draw_triplets({"s1": ["u1", "u2", "u3"]}, 2, random.Random(0), "here")
    with pytest.raises(ListeningTestError, match="speaker\\(s\\) s2 have a single utterance"):
        draw_triplets({"s1": ["u1", "u2"], "s2": ["v1"]}, 2, random.Random(0), "here")


def test_build_is_seeded_and_layers_independent(tmp_path):
    exp_root = make_experiment(tmp_path, utts_per_speaker=5)
    exp = exp_root / "probe_toy_baseline"
    data = tmp_path / "data"
    first = build_test([exp], data, ["test"], None, 6, seed=1)
    assert len(first) == 12 and [t.layer for t in first] == ["input"] * 6 + ["deep"] * 6
    assert {(t.model, t.training, t.layer_index) for t in first} == {
        ("toy", "baseline", 0), ("toy", "baseline", 1)}
    check_rules(first)
    assert all(p.is_relative_to(exp) for t in first for p in (t.a.path, t.b.path, t.x.path))
    assert build_test([exp], data, ["test"], None, 6, seed=1) == first
    assert build_test([exp], data, ["test"], None, 6, seed=2) != first
    # a layer's triplets do not depend on which other layers or experiments are in the test
    assert build_test([exp], data, ["test"], ["deep"], 6, seed=1) == first[6:]
    other = make_experiment(tmp_path, exp_name="probe_toy_robust", utts_per_speaker=5)
    both = build_test([exp, other / "probe_toy_robust"], data, ["test"], None, 6, seed=1)
    assert both[:12] == first and {t.training for t in both[12:]} == {"robust"}
    # an experiment without any of the asked layers (the oracle's only one is "original")
    # is left out rather than failing the whole test
    make_experiment(tmp_path, exp_name="probe_oracle", layers=("original",), utts_per_speaker=5)
    exps = [exp_root / n for n in ("probe_oracle", "probe_toy_baseline", "probe_toy_robust")]
    only_deep = build_test(exps, data, ["test"], ["deep"], 6, seed=1)
    assert only_deep[:6] == first[6:]
    assert {t.exp for t in only_deep} == {"probe_toy_baseline", "probe_toy_robust"}
    assert {t.model for t in build_test(exps, data, ["test"], None, 1, seed=1)} == {"oracle", "toy"}


def test_build_errors_name_the_file(tmp_path):
    exp_root = make_experiment(tmp_path)
    exp, data = exp_root / "probe_toy_baseline", tmp_path / "data"
    wav = exp / "decode_test" / "deep" / "wav" / "s2-01.wav"
    wav.unlink()
    with pytest.raises(ListeningTestError, match=f"audio of 's2-01' not found: {wav}"):
        build_test([exp], data, ["test"], ["deep"], 40, seed=0)
    with pytest.raises(ListeningTestError, match="layer\\(s\\) nope found in none"):
        build_test([exp], data, ["test"], ["input", "nope"], 2, seed=0)
    with pytest.raises(DataDirError, match="test_snr0/utt2spk: file not found"):
        build_test([exp], data, ["test_snr0"], None, 2, seed=0)
    (data / "test_snr0").mkdir()
    (data / "test_snr0" / "utt2spk").write_text((data / "test" / "utt2spk").read_text())
    with pytest.raises(ListeningTestError, match="no decode_test_snr0/summary.json"):
        build_test([exp], data, ["test_snr0"], None, 2, seed=0)
    # a wav.scp entry that leads out of the experiment (symlink or path) is refused
    outside = tmp_path / "outside.wav"
    (exp / "decode_test" / "input" / "wav" / "s1-00.wav").rename(outside)
    (exp / "decode_test" / "input" / "wav" / "s1-00.wav").symlink_to(outside)
    with pytest.raises(ListeningTestError, match="lies outside the experiment"):
        build_test([exp], data, ["test"], ["input"], 40, seed=0)
    scp = exp / "decode_test" / "input" / "wav.scp"
    lines = scp.read_text().splitlines(keepends=True)
    scp.write_text("s1-00 sox x.wav -t wav - |\n" + "".join(lines[1:]))
    with pytest.raises(ListeningTestError, match="'s1-00' is a command"):
        build_test([exp], data, ["test"], ["input"], 40, seed=0)
    scp.write_text("".join(lines) + "s9-00 x.wav\n")
    with pytest.raises(ListeningTestError, match="'s9-00' is not in .*utt2spk"):
        build_test([exp], data, ["test"], ["input"], 1, seed=0)


def test_model_and_training(tmp_path):
    for name, expected in (("probe_vgg_blstm_small_robust", ("vgg_blstm_small", "robust")),
                           ("probe_blstm_small_random", ("blstm_small", "random")),
                           ("probe_oracle", ("oracle", ""))):
        (tmp_path / name).mkdir()
        assert probe_exp_labels(tmp_path / name) == expected
    # a scored experiment keeps the labels the scoring stage gave it
    exp = tmp_path / "probe_custom"
    exp.mkdir()
    (exp / "scores.csv").write_text("model,training,set,layer,layer_index,metric,value,ci_low,"
                                    "ci_high,n\nmy_model,my_training,test,input,0,stoi,1,,,1\n")
    assert probe_exp_labels(exp) == ("my_model", "my_training")


def test_make_cli_refuses_to_overwrite_answers(tmp_path, capsys):
    exp_root = make_experiment(tmp_path)
    write_plan(exp_root, plan(exp_root, ["toy.yaml"], ["baseline"], controls=False, test_sets=["test"]))
    out = tmp_path / "listening" / "pilot"
    args = ["make", "--exp_root", str(exp_root), "--data", str(tmp_path / "data"), "--out", str(out),
            "--per_layer", "2"]
    assert listening_test.main(args) == 0
    db = out / "listening.db"
    assert sorted(p.name for p in out.iterdir()) == ["listening.db"]  # no temp or WAL left
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert listening_test.main(args + ["--seed", "3"]) == 0  # no answers yet: replaced
    with Store(db) as s:
        assert s.meta("seed") == "3" and s.n_trials() == 4
        rater = s.add_rater("Ann")
        s.submit_answer(rater.id, s.next_trial(rater.id).trial, "A")
    capsys.readouterr()
    assert listening_test.main(args) == 1
    assert "already holds 1 answers" in capsys.readouterr().err
    with Store(db) as s:
        assert s.n_answers() == 1 and s.meta("seed") == "3"
    assert listening_test.main(args + ["--force"]) == 0
    with Store(db) as s:
        assert s.n_answers() == 0 and s.meta("seed") == "0"
    assert sorted(p.name for p in out.iterdir()) == ["listening.db"]


def test_make_refuses_a_foreign_file(tmp_path):
    exp_root = make_experiment(tmp_path)
    triplets = build_test([exp_root / "probe_toy_baseline"], tmp_path / "data", ["test"], None, 1, 0)
    db = tmp_path / "out" / "listening.db"
    db.parent.mkdir()
    db.write_text("not a database")
    with pytest.raises(StoreError, match="not a listening-test database"):
        build_db(db, triplets, exp_root, 0)
    assert db.read_text() == "not a database"


def test_real_experiment(monkeypatch):
    """The recipe's own probe experiment, if present (reads only a few wav headers)."""
    exp = REPO / "exp" / "probe_vgg_blstm_small_baseline"
    if not (exp / "decode_test" / "input" / "wav.scp").is_file():
        pytest.skip(f"no vocoded probe experiment at {exp}")
    monkeypatch.chdir(REPO)  # wav.scp paths are relative to the recipe dir
    triplets = build_test([exp], REPO / "data", ["test"], ["input", "blstm5"], 4, seed=0)
    assert len(triplets) == 8
    assert {(t.model, t.training, t.layer) for t in triplets} == {
        ("vgg_blstm_small", "baseline", "input"), ("vgg_blstm_small", "baseline", "blstm5")}
    check_rules(triplets)
    assert all(t.x.path.parent.parent.name == t.layer for t in triplets)
