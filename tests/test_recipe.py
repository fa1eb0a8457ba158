"""The default run end to end: ./run.sh on the embedded corpus, stage group by stage group (the
LibriSpeech egs' stages 1-3 are in test_librispeech.py)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml

from conftest import REPO
from espnet_probe.utils.kaldi_dir import load_data_dir, read_table

pytestmark = pytest.mark.integration


def _load_scp(recipe: Path, scp: str) -> dict:
    import os
    cwd = os.getcwd()
    os.chdir(recipe)
    try:
        return dict(kaldiio.load_scp(scp).items())
    finally:
        os.chdir(cwd)


def _check_recipe_outputs(recipe: Path, train: str, tests: list[str], snrs=(0,)) -> None:
    data = recipe / "data"
    train_dir = load_data_dir(data / train)
    for t in tests:
        test_dir = load_data_dir(data / t)
        assert not set(test_dir.utt2spk.values()) & set(train_dir.utt2spk.values())
        for snr in snrs:
            noisy = load_data_dir(data / f"{t}_snr{snr}", extra_files=("utt2clean", "noise_info"))
            assert noisy.utt_ids == test_dir.utt_ids
            assert all(f"snr={snr}" in v for v in noisy.extra["noise_info"].values())
    aug = load_data_dir(data / f"{train}_aug", extra_files=("utt2clean",))
    assert sorted(aug.extra["utt2clean"].values()) == train_dir.utt_ids

    fb = recipe / "dump" / "fbank"
    for name in (train, f"{train}_aug", f"{train}_robust", *tests):
        assert (fb / name / ".done").exists()
    feats = _load_scp(recipe, f"dump/fbank/{tests[0]}_snr0/feats.scp")
    target = _load_scp(recipe, f"dump/fbank/{tests[0]}_snr0/target.scp")
    clean = _load_scp(recipe, f"dump/fbank/{tests[0]}/feats.scp")
    utt = sorted(feats)[0]
    assert feats[utt].shape[1] == 240 and target[utt].shape == (feats[utt].shape[0], 80)
    np.testing.assert_array_equal(target[utt], clean[utt][:, :80])
    robust = (fb / f"{train}_robust" / "feats.scp").read_text().splitlines()
    assert len(robust) == 2 * len(train_dir.utt2spk)
    stats = np.load(fb / f"{train}_robust" / "cmvn.npz")
    assert int(stats["count"]) == sum(
        int(v.split()[1]) for v in (fb / f"{train}_robust" / "utt2num_frames").read_text().splitlines())


def _run(args: list[str], recipe: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=recipe, env=env, capture_output=True, text=True)


# The default run, one test per stage group.  Each group's fixture needs the previous group's, so
# one test alone still runs the stages before it, and a group that broke errors every later test
# with its own stderr.  recipe_env (conftest) is per test, so the group fixtures are too; each
# group's run is kept in a module-scoped dict, so it runs once per module.
@pytest.fixture(scope="module")
def _runs() -> dict:
    return {}


def _run_once(runs: dict, args: list[str], recipe: Path, env: dict) -> subprocess.CompletedProcess:
    if tuple(args) not in runs:
        runs[tuple(args)] = _run(args, recipe, env)
    return runs[tuple(args)]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    # The recipe writes into its working directory; run a copy of the top level there.
    recipe = tmp_path_factory.mktemp("default_run") / "recipe"
    recipe.mkdir()
    for name in ("run.sh", "path.sh", "cmd.sh", "local", "conf", "scripts"):
        (recipe / name).symlink_to(REPO / name)
    (recipe / "tools").symlink_to(REPO / "tools")
    return recipe


@pytest.fixture(scope="module")
def tiny_asr(recipe) -> Path:
    # ASR stages with a tiny VGG-BLSTM (one pretraining stage, one epoch each): the stage
    # plumbing, not the accuracy, is under test here.
    conf = yaml.safe_load((REPO / "conf" / "asr" / "vgg_blstm_small.yaml").read_text())
    conf["encoder_conf"].update(conv_channels=[4, 4, 8, 8], hidden_size=16, projection_size=16)
    conf["encoder_pretraining"] = {"layers": [1], "epochs": 1}
    conf["max_epoch"] = 1
    tiny = recipe.parent / "tiny_vgg.yaml"
    tiny.write_text(yaml.safe_dump(conf))
    return tiny


@pytest.fixture(scope="module")
def late_args(recipe, tiny_asr) -> list[str]:
    """./run.sh from stage 10 on (speaker side, scoring, the report, demo and listening test),
    with a one-epoch ThinResNet."""
    spk = yaml.safe_load((REPO / "conf" / "speaker" / "resnet_small.yaml").read_text())
    spk["encoder_conf"].update(widths=[4, 8, 8, 8], blocks=[1, 1, 1, 1], descriptor_dim=16,
                               embed_dim=16)
    spk["max_epoch"] = 1
    spk_conf = recipe.parent / "tiny_spk.yaml"
    spk_conf.write_text(yaml.safe_dump(spk))
    return ["./run.sh", "--stage", "10", "--asr_config", str(tiny_asr), "--speaker_config",
            str(spk_conf), "--n_boot", "100"]


# The embedded corpus at a quarter of its default size (8 utterances a voice instead of 32: 112
# train, 16 dev, 32 test): every stage's work follows the number of utterances, and the stages'
# plumbing is what is under test here.
UTTS_PER_VOICE = 8
N_TEST = 4 * UTTS_PER_VOICE  # 4 test voices


@pytest.fixture
def stages_1_3(recipe, recipe_env, _runs) -> subprocess.CompletedProcess:
    proc = _run_once(_runs, ["./run.sh", "--stop_stage", "3", "--nj", "2", "--local_data_opts",
                             f"--utts_per_voice {UTTS_PER_VOICE}"], recipe, recipe_env)
    assert proc.returncode == 0, f"stages 1-3 failed:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture
def stages_4_6(stages_1_3, recipe, recipe_env, tiny_asr, _runs) -> subprocess.CompletedProcess:
    asr = _run_once(
        _runs, ["./run.sh", "--stage", "4", "--stop_stage", "6", "--asr_config", str(tiny_asr)],
        recipe, recipe_env)
    # One epoch leaves CTC on the blank plateau: every hypothesis is empty, and stage 6 refuses
    # to report that as WER 100 % (the decode guard, in the real pipeline); the WER path of a
    # model that learnt something is covered by test_asr_fixture and test_bring_recipe.  Checked
    # here, not in the test: any other exit 1 means stage 4 or 5 broke, and the probes can't run.
    assert asr.returncode == 1, f"stages 4-6 failed:\n{asr.stderr[-3000:]}"
    assert f"every one of the {N_TEST} hypotheses is empty" in asr.stderr, \
        f"stages 4-6 failed before stage 6's refusal:\n{asr.stderr[-3000:]}"
    return asr


# Probe stages: trained and random-encoder probes, decoding, the oracle and vocoding; three
# layers keep the later scoring stages short.
PROBE_LAYERS = ["input", "cnn2", "blstm5"]


@pytest.fixture
def stages_7_9(stages_4_6, recipe, recipe_env, tiny_asr, _runs) -> subprocess.CompletedProcess:
    probe = _run_once(
        _runs,
        ["./run.sh", "--stage", "7", "--stop_stage", "9", "--asr_config", str(tiny_asr),
         "--probe_args",
         f"--max_epoch 1 --probe_conf hidden_size=16 --layers {' '.join(PROBE_LAYERS)}",
         "--vocode_max_utts", "8"],
        recipe, recipe_env)
    assert probe.returncode == 0, f"stages 7-9 failed:\n{probe.stderr[-3000:]}"
    return probe


@pytest.fixture
def stages_10_14(stages_7_9, recipe, recipe_env, late_args, _runs) -> subprocess.CompletedProcess:
    scored = _run_once(_runs, late_args, recipe, recipe_env)
    assert scored.returncode == 0, f"stages 10-14 failed:\n{scored.stderr[-3000:]}"
    return scored


def test_default_run_stages_1_3_data_and_features(stages_1_3, recipe, recipe_env):
    assert "Finished stages 1..3" in stages_1_3.stderr
    _check_recipe_outputs(recipe, "train", ["test"])  # the default: 0 dB only
    assert len((recipe / "data" / "train" / "spk2utt").read_text().splitlines()) >= 10

    again = _run(["./run.sh", "--stage", "3", "--stop_stage", "3"], recipe, recipe_env)
    assert again.returncode == 0 and again.stderr.count("already complete, skipped") == 5  # train dev test train_aug test_snr0


def test_default_run_stages_4_6_tiny_asr(stages_4_6, recipe, recipe_env, tiny_asr):
    asr = stages_4_6
    # stage 5 shows each training's epochs on the console (model, epoch k/N, losses, s/epoch)
    for training in ("baseline", "robust"):
        assert re.search(rf"\[ASR asr_tiny_vgg_{training}\] epoch 1/1: train loss [\d.]+, valid loss "
                         rf"[\d.]+, \d+ s/epoch", asr.stderr), asr.stderr[-3000:]
    assert re.search(r"Stage 5 done in \d+ s", asr.stderr)
    for training in ("baseline", "robust"):
        exp = recipe / "exp" / f"asr_tiny_vgg_{training}"
        assert (exp / ".done").exists() and (exp / "pretrain" / "L1" / "1epoch.pth").exists()
        record = yaml.safe_load((exp / "experiment.yaml").read_text())
        assert record["training"] == training and record["trained"]["train_set"] == (
            "train" if training == "baseline" else "train_robust")
        assert record["trained"]["seconds"] >= 0 and "CPU cores" in record["trained"]["machine"]
        assert not list(exp.glob("decode_*/result.json"))  # nothing reported
    assert not (recipe / "exp" / "asr_results.md").exists()
    rerun = _run(["./run.sh", "--stage", "5", "--stop_stage", "5", "--asr_config", str(tiny_asr)],
                 recipe, recipe_env)
    assert rerun.returncode == 0 and rerun.stderr.count("already trained, skipped") == 2


def test_robust_model_fine_tuned_from_its_baseline(stages_4_6, recipe, recipe_env, tiny_asr):
    import torch
    exp = recipe / "exp_warm"
    warm = _run(["./run.sh", "--stage", "5", "--stop_stage", "5", "--asr_config", str(tiny_asr),
                 "--robust_init", "baseline", "--expdir", str(exp)], recipe, recipe_env)
    assert warm.returncode == 0, warm.stderr[-3000:]
    log = warm.stderr
    # the robust model waits for the trained baseline, and starts from it without growth stages
    assert log.index("[ASR asr_tiny_vgg_baseline] epoch 1/1: train loss") < log.index("[ASR asr_tiny_vgg_robust]")
    baseline, robust = exp / "asr_tiny_vgg_baseline", exp / "asr_tiny_vgg_robust"
    record = yaml.safe_load((robust / "experiment.yaml").read_text())
    assert record["init_from"] == str(baseline) and "init_from" not in yaml.safe_load(
        (baseline / "experiment.yaml").read_text())
    assert (baseline / "pretrain" / "L1").is_dir() and not (robust / "pretrain").exists()
    [init] = yaml.safe_load((robust / "config.yaml").read_text())["init_param"]
    checkpoint, rest = init.split(":", 1)
    # ESPnet got a checked copy (tensors only) of the baseline's checkpoint, kept in the robust dir
    assert Path(checkpoint).parent == robust / "checked_init" and rest == "::normalize"
    from espnet_probe.asr.brought import best_checkpoint

    started = torch.load(checkpoint, map_location="cpu", weights_only=True)
    trained = torch.load(best_checkpoint(baseline), map_location="cpu", weights_only=True)
    assert started.keys() == trained.keys() and all(torch.equal(started[k], trained[k]) for k in trained)
    # its own CMVN (clean + noisy), not the baseline's
    stats = np.load(recipe / "dump" / "fbank" / "train_robust" / "cmvn.npz")
    mean = stats["sum"] / stats["count"]
    state = torch.load(robust / "valid.loss.best.pth", map_location="cpu")
    np.testing.assert_allclose(state["normalize.mean"].numpy(), mean, rtol=1e-4, atol=1e-4)

    bad = _run(["./run.sh", "--stage", "5", "--stop_stage", "5", "--robust_init", "clean"], recipe, recipe_env)
    assert bad.returncode == 1 and "--robust_init must be scratch or baseline, got 'clean'" in bad.stderr


def test_default_run_stages_7_9_probes(stages_7_9, recipe):
    probe = stages_7_9
    layers = PROBE_LAYERS
    for name in ("baseline", "robust", "random"):  # stage 7's epochs on the console too
        assert re.search(rf"\[probe probe_tiny_vgg_{name}\] epoch 1/1: train loss [\d.]+, valid loss",
                         probe.stderr), probe.stderr[-3000:]
    conditions = ["test", "test_snr0"]  # the default --test_snrs 0
    test_dir = load_data_dir(recipe / "data" / "test")
    probes = ("probe_tiny_vgg_baseline", "probe_tiny_vgg_robust", "probe_tiny_vgg_random")
    for name in probes:
        pexp = recipe / "exp" / name
        assert (pexp / ".done").exists()
        # the random-encoder control runs on the clean set only (--control_conditions clean)
        assert name.endswith("random") == (not (pexp / "decode_test_snr0").exists())
        for condition in (["test"] if name.endswith("random") else conditions):
            decode = pexp / f"decode_{condition}"
            summary = json.loads((decode / "summary.json").read_text())
            assert list(summary["layers"]) == layers and summary["utterances"] == N_TEST
            vocoded = (decode / "vocoded_utts").read_text().split()
            assert len(vocoded) == 8 and len({test_dir.utt2spk[u] for u in vocoded}) == 4
            for layer in layers:
                mel = _load_scp(recipe, f"exp/{name}/decode_{condition}/{layer}/mel.scp")
                wavs = (decode / layer / "wav.scp").read_text().splitlines()
                assert len(mel) == N_TEST and len(wavs) == 8
    results = (recipe / "exp" / "probe_results.csv").read_text().splitlines()
    assert len(results) == 1 + (2 * len(conditions) + 1) * len(layers)
    oracle = recipe / "exp" / "probe_oracle" / "decode_test_snr0"
    assert len((oracle / "original" / "wav.scp").read_text().splitlines()) == 8
    import soundfile
    utt = (oracle / "vocoded_utts").read_text().split()[0]
    wav, sr = soundfile.read(oracle / "original" / "wav" / f"{utt}.wav")
    ref = soundfile.info(recipe / read_table(recipe / "data" / "test_snr0" / "wav.scp")[utt])
    assert sr == 16000 and abs(len(wav) - ref.frames) <= 160


def test_default_run_stages_10_12_speaker_scoring_report(stages_10_14, recipe, monkeypatch):
    from espnet_probe.experiments import KINDS, select

    layers = PROBE_LAYERS
    exp = recipe / "exp"
    # every output of the run has its record, the run-level ones included
    monkeypatch.chdir(recipe)  # the plan's dirs are relative to the recipe dir
    planned = select("exp")
    assert {e.kind for e in planned} == set(KINDS)
    assert {e.kind: e.dir for e in planned if e.kind in ("speaker", "trials", "demo")} == {
        "speaker": "exp/speaker_tiny_spk", "trials": "exp/trials", "demo": "exp/demo"}
    assert (exp / "speaker_tiny_spk" / ".done").exists()
    sid = (exp / "asr_tiny_vgg_baseline" / "speaker_id" / "results.csv").read_text().splitlines()
    assert sid[0].startswith("layer,layer_index,accuracy") and len(sid) == 1 + 12
    trials = (exp / "trials" / "test" / "trials").read_text().splitlines()
    assert len(trials) == 8 and sum(t.endswith(" target") for t in trials) == 4  # 2 utts x 4 spk
    with open(exp / "report" / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["model", "training", "condition", "layer", "layer_index", "metric",
                             "value", "ci_low", "ci_high", "n"]
    got = {(r["model"], r["training"], r["condition"], r["layer"], r["metric"]) for r in rows}
    for training in ("baseline", "robust", "random"):
        for condition in ("clean",) if training == "random" else ("clean", "snr0"):
            for layer in layers:
                for metric in ("eer_ge2e", "eer_resnet", "mindcf_ge2e", "stoi", "estoi", "pesq",
                               "pesq_failed", "mel_l1", "mcd"):
                    assert ("tiny_vgg", training, condition, layer, metric) in got
        assert ("tiny_vgg", training, "clean", "blstm5", "speaker_id_acc") in got
    for condition in ("clean", "snr0"):
        assert ("original", "", condition, "audio", "eer_ge2e") in got
        assert ("oracle", "", condition, "original", "stoi") in got
        assert ("tiny_vgg", "baseline", condition, "output", "wer") not in got  # refused by stage 6
    results_md = (exp / "report" / "RESULTS.md").read_text()
    assert "## Table 1" not in results_md and "## Table 2: Speaker verification EER, GE2E" in results_md
    for png in ("eer_ge2e.png", "eer_resnet.png", "stoi.png", "speaker_id_acc.png",
                "mel_tiny_vgg.png"):
        assert (exp / "report" / png).stat().st_size > 5000, png


def test_default_run_stages_13_14_demo_and_listening(stages_10_14, recipe, recipe_env, late_args):
    layers = PROBE_LAYERS
    exp = recipe / "exp"
    # Stage 13: the demo page and a listening test over the robust model's layers (paper Fig. 2b)
    demo = (exp / "demo" / "index.html").read_text()
    assert "tiny_vgg / baseline / clean" in demo and demo.count("<audio") >= 3 * (len(layers) + 2)
    db = exp / "listening" / "default" / "listening.db"
    assert "No listening-test results" in (exp / "report" / "RESULTS.md").read_text()
    # Stage 14: one scripted rater answers every trial "A"; the report gains Fig. 2b
    from espnet_probe.listening.store import Store
    with Store(db) as store:
        assert store.n_trials() == 5 * len(layers)  # --listening_per_layer 5, one experiment
        rater = store.add_rater("scripted")
        while (trial := store.next_trial(rater.id)) is not None:
            store.submit_answer(rater.id, trial.trial, "A")
    human = _run(late_args[:2] + ["14"] + late_args[3:], recipe, recipe_env)
    assert human.returncode == 0, human.stderr[-3000:]
    with open(exp / "report" / "scores.csv", newline="") as f:
        errors = [r for r in csv.DictReader(f) if r["metric"] == "human_error"]
    assert {r["layer"] for r in errors} == set(layers) and all(r["n"] == "5" for r in errors)
    assert {(r["model"], r["training"]) for r in errors} == {("tiny_vgg", "robust")}
    assert (exp / "report" / "human_error.png").exists()
    # a re-run recomputes nothing, keeps the answers, and reports the same numbers
    before = (exp / "report" / "scores.csv").read_text()
    again = _run(late_args, recipe, recipe_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained, skipped" in again.stderr and ": embedding" not in again.stderr
    assert (exp / "report" / "scores.csv").read_text() == before
    assert "keeping exp/listening/default/listening.db" in again.stderr


def test_default_run_fetches_no_nltk_data(stages_4_6, stages_7_9, stages_10_14, recipe):
    # offline and clean: no stage's log, nor the console, tried to fetch nltk data
    logs = [p for p in recipe.rglob("*.log") if p.is_file()]
    assert len(logs) > 20
    assert not [p for p in logs if "nltk_data" in p.read_text(errors="replace")]
    assert "nltk_data" not in stages_4_6.stderr + stages_7_9.stderr + stages_10_14.stderr
