"""The one freshness rule (espnet_probe.utils.freshness.Stamp): skip, resume, or redo from scratch."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO
from espnet_probe.utils.freshness import Stamp, fingerprint


def test_stamp_skips_resumes_or_redoes_and_keeps_the_records(tmp_path):
    out = tmp_path / "exp"
    stamp = Stamp(out)
    assert stamp.state({"a": 1}) == "new" and stamp.begin({"a": 1}) == "new"
    (out / "part.ark").write_text("half")
    (out / "experiment.yaml").write_text("kind: asr\n")
    (out / "inner").mkdir()
    (out / "inner" / "experiment.yaml").write_text("kind: speaker_id\n")
    (out / "inner" / "scores.csv").write_text("stale")
    # killed half-way, same settings (in any key order): continue with what is there
    assert stamp.begin({"a": 1}) == "resume" and (out / "part.ark").exists()
    # other settings: everything goes but the experiment records
    assert stamp.begin({"a": 2}) == "changed"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        ".started", "experiment.yaml", "inner", "inner/experiment.yaml"]
    assert not stamp.is_done()
    stamp.finish({"a": 2}, utterances=3)
    assert stamp.is_done()
    assert not stamp.started.exists() and stamp.summary() == {"utterances": 3}
    assert stamp.state({"a": 2}) == "done" and stamp.begin({"a": 2}) == "done"
    assert stamp.state({"a": 3}) == "changed"
    # work that cannot continue half-way is redone
    (out / "x").write_text("half")
    assert Stamp(out).begin({"b": 1}) == "changed" and not (out / "x").exists()
    stamp.begin({"c": 1})
    (out / "x").write_text("half")
    assert stamp.begin({"c": 1}, resumable=False) == "changed" and not (out / "x").exists()
    # a stamp of an older format claims nothing
    stamp.finished.write_text("config=abc data=def\n")
    assert stamp.state("config=abc data=def") == "changed"


def test_named_stamps_share_a_dir_and_own_only_their_files(tmp_path):
    features, waves = Stamp(tmp_path), Stamp(tmp_path, "wave")
    features.finish({"fbank": 1})
    (tmp_path / "feats.scp").write_text("u a.ark:1\n")
    (tmp_path / "wave.scp").write_text("old")
    assert waves.begin({"digest": "x"}, owned=[tmp_path / "wave.scp"]) == "new"
    assert not (tmp_path / "wave.scp").exists() and (tmp_path / "feats.scp").exists()
    waves.finish({"digest": "x"})
    assert (tmp_path / ".wave.done").is_file() and features.state({"fbank": 1}) == "done"


def test_stamp_command_line(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "espnet_probe.bin.stamp", *a],  # noqa: E731
                                    cwd=REPO, capture_output=True, text=True)
    out, conf = tmp_path / "set", tmp_path / "train.yaml"
    conf.write_text("lr: 1\n")
    settings = ["--inputs", str(conf), "--options", "--seed 1"]
    assert run("is_done", str(out)).returncode == 1
    assert run("begin", str(out), *settings).stdout == "new\n"
    assert run("is_done", str(out)).returncode == 1
    assert run("finish", str(out), *settings).returncode == 0
    assert json.loads((out / ".done").read_text())["settings"] == {
        "inputs": {str(conf): fingerprint(conf)}, "options": "--seed 1"}
    assert run("begin", str(out), *settings).stdout == "done\n"
    is_done = run("is_done", str(out))
    assert is_done.returncode == 0 and is_done.stdout == ""
    (out / "wav").mkdir()
    (out / "wav" / "a.wav").write_text("x")
    conf.write_text("lr: 2\n")  # an input's content is part of the settings
    assert run("begin", str(out), *settings, "--owned", str(out / "wav")).stdout == "changed\n"
    assert not (out / "wav").exists()
    # an input changed while the output was made: it is recorded as made from what it began with
    conf.write_text("lr: 3\n")
    assert run("finish", str(out), *settings).returncode == 0
    assert run("begin", str(out), *settings).stdout == "changed\n"
    # named parts, unfinished work made again
    job = ("--name", "job1", "--options", "a")
    assert run("begin", str(out), *job).stdout == "new\n"
    assert run("begin", str(out), *job).stdout == "resume\n"
    assert run("begin", str(out), *job, "--no_resume").stdout == "changed\n"
    assert run("is_done", str(out), "--name", "job1").returncode == 1
    missing = run("begin", str(out), "--inputs", str(tmp_path / "nope"))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert str(tmp_path / "nope") in missing.stderr and "not found" in missing.stderr
