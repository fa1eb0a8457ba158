"""Experiment records: the plan of a run, what each stage lists, and the record surviving a wipe."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from conftest import REPO
from espnet_probe.bin import experiments as cli
from espnet_probe.experiments import ExperimentError, load, plan, select, write_plan


def _brought(exp_dir, model="wav2vec-conformer"):
    exp_dir.mkdir(parents=True)
    (exp_dir / "experiment.yaml").write_text(yaml.safe_dump(
        {"kind": "asr", "origin": "brought", "model": model, "training": "brought",
         "config": "/elsewhere/config.yaml", "checkpoint": "/elsewhere/valid.acc.ave.pth"}))
    return exp_dir


def test_plan_of_the_paper_design_with_a_brought_model(tmp_path):
    exp = tmp_path / "exp"
    # the brought model's dir name says nothing: its record gives the name and the training
    brought = _brought(exp / "some_dir")
    exps = plan(exp, ["conf/asr/vgg_blstm_small.yaml", "conf/asr/blstm_small.yaml"],
                ["baseline", "robust"], [brought], True, ["test"], ["test_snr0"], "clean")
    asr = [e for e in exps if e.kind == "asr"]
    assert [(e.model, e.training) for e in asr] == [
        ("vgg_blstm_small", "baseline"), ("vgg_blstm_small", "robust"),
        ("blstm_small", "baseline"), ("blstm_small", "robust"), ("wav2vec-conformer", "brought")]
    probes = [e for e in exps if e.kind == "probe"]
    assert [(e.model, e.training, e.init) for e in probes] == [
        ("vgg_blstm_small", "baseline", "trained"), ("vgg_blstm_small", "robust", "trained"),
        ("vgg_blstm_small", "random", "random"),
        ("blstm_small", "baseline", "trained"), ("blstm_small", "robust", "trained"),
        ("blstm_small", "random", "random"),
        ("wav2vec-conformer", "brought", "trained"), ("wav2vec-conformer", "random", "random")]
    # controls take their architecture's first training and the clean set only
    control = probes[2]
    assert control.asr_exp == str(exp / "asr_vgg_blstm_small_baseline") and control.sets == ("test",)
    assert probes[0].sets == ("test", "test_snr0")
    assert probes[-1].asr_exp == str(brought) and probes[-1].dir == str(exp / "probe_wav2vec-conformer_random")
    sid = [e for e in exps if e.kind == "speaker_id"]
    assert sid[-1].dir == str(brought / "speaker_id_random") and sid[-1].training == "random"
    everything = plan(exp, ["conf/asr/vgg_blstm_small.yaml"], ["baseline"], (), True, ["test"],
                      ["test_snr0"], "all")
    assert [e.sets for e in everything if e.init == "random" and e.kind == "probe"] == [("test", "test_snr0")]
    assert not [e for e in plan(exp, ["a.yaml"], ["baseline"], (), False, ["test"]) if e.init == "random"]


def test_robust_models_may_start_from_their_baseline(tmp_path):
    exp = tmp_path / "exp"
    configs = ["conf/asr/vgg_blstm_small.yaml", "conf/asr/blstm_small.yaml"]
    asr = [e for e in plan(exp, configs, ["baseline", "robust"], robust_init="baseline") if e.kind == "asr"]
    assert [(e.training, e.init_from) for e in asr] == [
        ("baseline", ""), ("robust", str(exp / "asr_vgg_blstm_small_baseline")),
        ("baseline", ""), ("robust", str(exp / "asr_blstm_small_baseline"))]
    write_plan(exp, asr)
    assert load(asr[1].dir).init_from == asr[0].dir  # in the record, read back by stage 5
    assert all(not e.init_from for e in plan(exp, configs, ["baseline", "robust"]) if e.kind == "asr")
    with pytest.raises(ExperimentError, match="needs the baseline training too"):
        plan(exp, configs, ["robust"], robust_init="baseline")
    with pytest.raises(ExperimentError, match="robust_init must be scratch or baseline"):
        plan(exp, configs, ["robust"], robust_init="clean")


def test_records_round_trip_and_the_list_a_stage_reads(tmp_path, capsys):
    exp = tmp_path / "exp"
    brought = _brought(exp / "asr_x_brought", model="x")
    exps = plan(exp, ["conf/asr/vgg_blstm_small.yaml"], ["baseline", "robust"], [brought], True,
                ["test"], ["test_snr0", "test_snr10"])
    write_plan(exp, exps)
    assert [load(e.dir) for e in exps] == exps
    assert yaml.safe_load((brought / "experiment.yaml").read_text())["checkpoint"]  # left as brought
    assert select(exp) == exps
    assert [e.dir for e in select(exp, kind="probe", init="random")] == [
        str(exp / "probe_vgg_blstm_small_random"), str(exp / "probe_x_random")]
    assert cli.main(["list", "--expdir", str(exp), "--kind", "probe", "--training", "robust",
                     "--fields", "dir,asr_exp,init,sets,model,training"]) == 0
    assert capsys.readouterr().out.split() == [
        str(exp / "probe_vgg_blstm_small_robust"), str(exp / "asr_vgg_blstm_small_robust"),
        "trained", "test,test_snr0,test_snr10", "vgg_blstm_small", "robust"]
    # an empty field prints as '-', so the shell's read keeps its columns
    assert cli.main(["list", "--expdir", str(exp), "--kind", "asr", "--fields", "asr_exp,dir"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"- {exp / 'asr_vgg_blstm_small_baseline'}"
    # a changed option rewrites the records it changes
    write_plan(exp, plan(exp, ["conf/asr/vgg_blstm_small.yaml"], ["baseline", "robust"], [brought],
                         True, ["test"], ["test_snr0"], "all"))
    assert load(exp / "probe_vgg_blstm_small_random").sets == ("test", "test_snr0")


def test_bad_plans_and_records_are_one_clear_error(tmp_path, capsys):
    exp = tmp_path / "exp"
    with pytest.raises(ExperimentError, match="no ASR record"):
        plan(exp, [], [], [tmp_path / "not_brought"])
    with pytest.raises(ExperimentError, match="share the dir .*asr_same_baseline"):
        plan(exp, ["a/same.yaml", "b/same.yaml"], ["baseline"])
    with pytest.raises(ExperimentError, match="no plan"):
        select(exp)
    (exp / "probe_y").mkdir(parents=True)
    with pytest.raises(ExperimentError, match="probe_y: no experiment.yaml"):
        load(exp / "probe_y")
    write_plan(exp, plan(exp, ["conf/a.yaml"], ["baseline"]))
    assert cli.main(["list", "--expdir", str(exp), "--fields", "dir,colour"]) == 1
    assert "unknown field 'colour'" in capsys.readouterr().err


def test_a_settings_change_wipes_the_experiment_but_its_records(tmp_path, recipe_env):
    write_plan(tmp_path, plan(tmp_path, ["z.yaml"], ["baseline"]))
    exp = tmp_path / "asr_z_baseline"
    (exp / "checkpoint.pth").write_text("old")
    (exp / "log").mkdir()
    (exp / ".started").write_text(json.dumps({"settings": "old settings"}))
    (exp / "speaker_id" / "results.csv").write_text("stale")  # beside the speaker-ID record

    def guard(call):
        script = f'. "{REPO}/scripts/exp_guard.sh"; {call}'
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=recipe_env)

    proc = guard(f'exp_begin ASR "{exp}" "new settings"')
    assert proc.returncode == 0 and "settings changed, training from scratch" in proc.stderr
    left = sorted(str(p.relative_to(exp)) for p in exp.rglob("*"))
    assert left == [".started", "experiment.yaml", "speaker_id", "speaker_id/experiment.yaml",
                    "speaker_id_random", "speaker_id_random/experiment.yaml"]
    assert load(exp).training == "baseline" and len(select(tmp_path)) == 5  # the plan still lists
    # killed half-way: the same settings resume (the checkpoint stays); finished: skipped
    (exp / "checkpoint.pth").write_text("half")
    proc = guard(f'exp_begin ASR "{exp}" "new settings"')
    assert proc.returncode == 0 and not proc.stderr and (exp / "checkpoint.pth").exists()
    assert guard(f'exp_finish ASR "{exp}" "new settings"').returncode == 0
    proc = guard(f'exp_begin ASR "{exp}" "new settings" || echo skipped')
    assert "already trained, skipped" in proc.stderr and proc.stdout == "skipped\n"


def test_training_notes_stay_in_the_record_while_the_plan_is_unchanged(tmp_path):
    exp = tmp_path / "exp"
    planned = plan(exp, ["conf/asr/vgg_blstm_small.yaml"], ["baseline"], (), False, ["test"])
    write_plan(exp, planned)
    asr_dir = exp / "asr_vgg_blstm_small_baseline"
    assert cli.main(["trained", "--exp", str(asr_dir), "--train_set", "train",
                             "--seconds", "81", "--machine", "2 CPU cores"]) == 0
    noted = yaml.safe_load((asr_dir / "experiment.yaml").read_text())
    assert noted["trained"] == {"train_set": "train", "seconds": 81, "machine": "2 CPU cores"}
    assert noted["training"] == "baseline" and load(asr_dir).training == "baseline"
    write_plan(exp, planned)  # the same plan again: the note stays
    assert yaml.safe_load((asr_dir / "experiment.yaml").read_text()) == noted
    # a record of another config is a new experiment: the old training's note goes
    moved = plan(exp, [str(tmp_path / "vgg_blstm_small.yaml")], ["baseline"], (), False, ["test"])
    write_plan(exp, moved)
    assert "trained" not in yaml.safe_load((asr_dir / "experiment.yaml").read_text())
    assert cli.main(["trained", "--exp", str(tmp_path / "none"), "--train_set", "t",
                             "--seconds", "1", "--machine", "m"]) == 1
