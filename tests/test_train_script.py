"""local/train.sh: one training per experiment dir, skipped, resumed or restarted by its settings,
with the job's epochs on the console; ESPnet itself is replaced by a stand-in job backend."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from espnet_probe.experiments import load, plan, write_plan

EPOCHS = """\
[vm] 2026-12-01 13:13:44,769 (trainer:336) INFO: 1/12epoch started
[vm] 2026-12-01 13:16:21,719 (trainer:394) INFO: 1epoch results: [train] iter_time=0.009, loss_ctc=358.866, loss=358.866, train_time=1.314, time=2 minutes and 29.8 seconds, total_count=110, [valid] loss_ctc=343.988, loss=343.988, time=6.13 seconds, total_count=13
"""
# The job backend's interface (run.pl: LOG COMMAND...): the command goes to LOG with the epochs
# of a training, every call is counted, and the job exits with $FAKE_STATUS.
FAKE_BACKEND = """#!/usr/bin/env bash
log=$1; shift
mkdir -p "$(dirname "$log")"
{ echo "# $*"; cat "$FAKE_EPOCHS"; } > "$log"
echo call >> "$FAKE_CALLS"
exit "${FAKE_STATUS:-0}"
"""


@pytest.fixture
def run(tmp_path, recipe_env):
    backend = tmp_path / "backend.sh"
    backend.write_text(FAKE_BACKEND)
    backend.chmod(0o755)
    (tmp_path / "epochs").write_text(EPOCHS)

    def train(*args: str, status: int = 0) -> subprocess.CompletedProcess:
        env = {**recipe_env, "FAKE_STATUS": str(status), "FAKE_EPOCHS": str(tmp_path / "epochs"),
               "FAKE_CALLS": str(tmp_path / "calls")}
        return subprocess.run([str(REPO / "local" / "train.sh"), "--cmd", str(backend), *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return train


def _calls(tmp_path: Path) -> int:
    calls = tmp_path / "calls"
    return len(calls.read_text().splitlines()) if calls.is_file() else 0


def _asr_inputs(tmp_path: Path) -> list[str]:
    for s in ("train", "dev"):
        (tmp_path / "fbank" / s).mkdir(parents=True)
        (tmp_path / "fbank" / s / "feats.scp").write_text(f"u1 fbank/{s}/feats.ark:9\n")
    (tmp_path / "z.yaml").write_text("max_epoch: 12\n")
    (tmp_path / "tokens.txt").write_text("<blank>\na\n")
    return ["--task", "asr", "--config", "z.yaml", "--featdir", "fbank", "--train_set", "train",
            "--valid_set", "dev", "--token_list", "tokens.txt"]


def test_an_asr_training_is_resumed_skipped_or_restarted_by_its_settings(tmp_path, run):
    write_plan(tmp_path / "exp", plan(tmp_path / "exp", ["z.yaml"], ["baseline"]))
    exp = tmp_path / "exp" / "asr_z_baseline"
    args = _asr_inputs(tmp_path) + ["--exp", str(exp), "--train_args", "--max_epoch 3"]

    # a failed job: one clear line and the log's tail, the epochs shown meanwhile, nothing done
    failed = run(*args, status=3)
    assert failed.returncode == 1, failed.stderr
    assert f"ASR training failed, see {exp}/train.log" in failed.stderr
    assert "[ASR asr_z_baseline] epoch 1/12: train loss 358.866, valid loss 343.988" in failed.stderr
    command = (exp / "train.log").read_text().splitlines()[0]
    assert "python -m espnet_probe.bin.asr_train --config z.yaml" in command
    assert "--resume true" in command and command.endswith("--max_epoch 3")
    assert "--token_list tokens.txt --token_type char" in command and "--init_param" not in command
    assert not (exp / ".done").exists() and (exp / ".started").exists()

    # the same settings again: resumed (what the first run left stays), then noted and done
    (exp / "checkpoint.pth").write_text("half")
    resumed = run(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "settings changed" not in resumed.stderr and (exp / "checkpoint.pth").read_text() == "half"
    assert f"ASR {exp}: trained in" in resumed.stderr and (exp / ".done").exists()
    trained = yaml.safe_load((exp / "experiment.yaml").read_text())["trained"]
    assert trained["train_set"] == "train" and "CPU cores, 0 GPU, 1 thread(s)" in trained["machine"]

    # finished with these settings: skipped without a job
    skipped = run(*args)
    assert skipped.returncode == 0 and f"ASR {exp}: already trained, skipped" in skipped.stderr
    assert _calls(tmp_path) == 2

    # an input changed: everything goes but the records, the nested speaker-ID ones included
    (tmp_path / "fbank" / "train" / "feats.scp").write_text("u1 fbank/train/feats.ark:10\n")
    (exp / "speaker_id" / "results.csv").write_text("stale")
    restarted = run(*args, status=3)
    assert "settings changed, training from scratch" in restarted.stderr
    left = sorted(str(p.relative_to(exp)) for p in exp.rglob("*") if p.name != "train.log")
    assert left == [".started", "experiment.yaml", "speaker_id", "speaker_id/experiment.yaml",
                    "speaker_id_random", "speaker_id_random/experiment.yaml"]
    assert load(exp).training == "baseline"
    # and so do the options
    run(*args)
    again = run(*args[:-1], "--max_epoch 4")
    assert "settings changed, training from scratch" in again.stderr and again.returncode == 0


def test_an_asr_model_may_start_from_a_checkpoint(tmp_path, run):
    write_plan(tmp_path / "exp", plan(tmp_path / "exp", ["z.yaml"], ["robust"]))
    exp = tmp_path / "exp" / "asr_z_robust"
    args = _asr_inputs(tmp_path) + ["--exp", str(exp)]
    missing = run(*args, "--init_from", "base.pth")
    assert missing.returncode == 1 and "input base.pth not found" in missing.stderr
    (tmp_path / "base.pth").write_bytes(b"weights")
    assert run(*args, "--init_from", "base.pth").returncode == 0
    assert "--init_param base.pth:::normalize" in (exp / "train.log").read_text()
    (tmp_path / "base.pth").write_bytes(b"other weights")  # another model to start from
    assert "settings changed" in run(*args, "--init_from", "base.pth").stderr


def test_probe_and_speaker_trainings_take_their_own_options(tmp_path, run):
    _asr_inputs(tmp_path)
    (tmp_path / "asr.pth").write_bytes(b"weights")
    probe = run("--task", "probe", "--config", "z.yaml", "--exp", "exp/probe_z_random",
                "--asr_config", "asr/config.yaml", "--asr_model", "asr.pth", "--asr_init", "random",
                "--featdir", "fbank", "--train_set", "train", "--valid_set", "dev")
    assert probe.returncode == 0, probe.stderr
    assert "[probe probe_z_random] epoch 1/12" in probe.stderr
    command = (tmp_path / "exp" / "probe_z_random" / "train.log").read_text().splitlines()[0]
    assert "python -m espnet_probe.bin.probe_train --config z.yaml" in command
    assert "--asr_model_file asr.pth --asr_init random --train_dump_dir fbank/train" in command

    speaker = ["--task", "speaker", "--config", "z.yaml", "--exp", "exp/speaker_z"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wav.scp").write_text("u1 a.wav\n")
    refused = run(*speaker, "--train_dir", "data")
    assert refused.returncode == 1 and "data needs wav.scp and utt2spk" in refused.stderr
    (tmp_path / "data" / "utt2spk").write_text("u1 s1\n")
    trained = run(*speaker, "--train_dir", "data", "--split_seed", "3")
    assert trained.returncode == 0, trained.stderr
    assert "speaker encoder exp/speaker_z: trained in" in trained.stderr
    command = (tmp_path / "exp" / "speaker_z" / "train.log").read_text().splitlines()[0]
    assert "--train_data_dir data --valid_fraction 0.1 --split_seed 3" in command
    assert "already trained" in run(*speaker, "--train_dir", "data", "--split_seed", "3").stderr
    assert "settings changed" in run(*speaker, "--train_dir", "data", "--split_seed", "4").stderr


def test_each_task_names_what_it_misses(tmp_path, run):
    proc = run("--task", "asr", "--config", "z.yaml", "--exp", "e", "--train_set", "t", "--valid_set", "v")
    assert proc.returncode == 1 and "--task asr needs --token_list" in proc.stderr
    proc = run("--task", "probe", "--config", "z.yaml", "--exp", "e")
    assert proc.returncode == 1 and "--task probe needs --asr_config" in proc.stderr
    proc = run("--task", "decoder", "--exp", "e")
    assert proc.returncode == 1 and "--task must be asr, probe or speaker, got 'decoder'" in proc.stderr
    assert _calls(tmp_path) == 0
