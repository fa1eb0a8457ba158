"""Experiment records: the plan of a run, what each stage lists and asks, and the choices the
stages take from it (stage 5's order, the listening test's default, the demo's experiments)."""

from __future__ import annotations

import pytest
import yaml

from espnet_probe.bin import experiments as cli
from espnet_probe.experiments import (Experiment, ExperimentError, listening_default, load, plan,
                                      probe_experiments, read_experiment, select, training_rounds,
                                      write_plan)


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


def test_the_plan_names_every_output_of_the_run(tmp_path):
    exp = tmp_path / "exp"
    exps = plan(exp, ["conf/asr/vgg_blstm_small.yaml"], ["baseline", "robust"], (), True, ["test"],
                ["test_snr0"], speaker_config="conf/speaker/resnet_small.yaml", listening_name="pilot")
    outputs = {e.kind: e for e in exps if e.kind not in ("asr", "probe", "speaker_id")}
    assert [e.kind for e in exps][-7:] == ["oracle", "original", "speaker", "trials", "report",
                                           "demo", "listening"]
    assert outputs["oracle"] == Experiment("oracle", str(exp / "probe_oracle"), "oracle",
                                           sets=("test", "test_snr0"))
    assert outputs["original"].dir == str(exp / "score_original")
    assert outputs["original"].model == "original" and outputs["original"].sets == ("test", "test_snr0")
    assert outputs["speaker"] == Experiment("speaker", str(exp / "speaker_resnet_small"), "resnet_small",
                                            config="conf/speaker/resnet_small.yaml")
    assert outputs["trials"].sets == ("test",)  # trials: the clean test sets
    assert [outputs[k].dir for k in ("report", "demo", "listening")] == [
        str(exp / "report"), str(exp / "demo"), str(exp / "listening" / "pilot")]
    write_plan(exp, exps)
    assert select(exp, kind="oracle") == [outputs["oracle"]]
    assert load(exp / "listening" / "pilot").kind == "listening"
    # without a speaker config, no speaker encoder
    assert "speaker" not in {e.kind for e in plan(exp, ["a.yaml"], ["baseline"], test_sets=["test"])}


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
    # the shell gets dirs, one per line, and asks each record for a field
    assert cli.main(["list", "--expdir", str(exp), "--kind", "probe", "--training", "robust"]) == 0
    robust = str(exp / "probe_vgg_blstm_small_robust")
    assert capsys.readouterr().out == f"{robust}\n"
    for field, value in (("asr_exp", str(exp / "asr_vgg_blstm_small_robust")), ("init", "trained"),
                         ("sets", "test test_snr0 test_snr10"), ("model", "vgg_blstm_small"),
                         ("training", "robust"), ("init_from", "")):
        assert cli.main(["get", robust, field]) == 0
        assert capsys.readouterr().out == f"{value}\n", field
    assert cli.main(["list", "--expdir", str(exp), "--kind", "report"]) == 0
    assert capsys.readouterr().out == f"{exp / 'report'}\n"
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
    assert cli.main(["get", str(exp / "asr_a_baseline"), "colour"]) == 1
    assert "unknown field 'colour'" in capsys.readouterr().err
    assert cli.main(["get", str(exp / "nothing"), "model"]) == 1
    assert "nothing: no experiment.yaml" in capsys.readouterr().err
    (exp / "asr_a_baseline" / "experiment.yaml").write_text("kind: [asr\n")
    with pytest.raises(ExperimentError, match="asr_a_baseline/experiment.yaml: not valid YAML"):
        read_experiment(exp / "asr_a_baseline")
    (exp / "asr_a_baseline" / "experiment.yaml").write_text("- asr\n")
    with pytest.raises(ExperimentError, match="asr_a_baseline/experiment.yaml: not a record"):
        load(exp / "asr_a_baseline")


def _dirs(exps):
    return [e.dir.rsplit("/", 1)[1] for e in exps]


def test_stage_5_trains_from_scratch_first_robust_leading_and_never_a_brought_model(tmp_path):
    exp = tmp_path / "exp"
    brought = _brought(exp / "asr_w_brought", model="w")
    configs = ["v.yaml", "b.yaml"]
    first, then = training_rounds(plan(exp, configs, ["baseline", "robust"], [brought]))
    assert _dirs(first) == ["asr_v_robust", "asr_b_robust", "asr_v_baseline", "asr_b_baseline"]
    assert then == []
    first, then = training_rounds(plan(exp, configs, ["baseline", "robust"], [brought],
                                       robust_init="baseline"))
    assert _dirs(first) == ["asr_v_baseline", "asr_b_baseline"]
    assert _dirs(then) == ["asr_v_robust", "asr_b_robust"]


def test_stage_5_rounds_on_the_command_line(tmp_path, capsys):
    exp = tmp_path / "exp"
    write_plan(exp, plan(exp, ["v.yaml"], ["baseline", "robust"], robust_init="baseline"))
    assert cli.main(["trainings", "--expdir", str(exp)]) == 0
    assert capsys.readouterr().out == f"{exp / 'asr_v_baseline'}\n{exp / 'asr_v_robust'}\n"
    write_plan(exp, plan(exp, ["v.yaml"], ["baseline", "robust"]))
    assert cli.main(["trainings", "--expdir", str(exp)]) == 0  # one round: no empty line
    assert capsys.readouterr().out == f"{exp / 'asr_v_robust'} {exp / 'asr_v_baseline'}\n"


def test_the_listening_test_defaults_to_the_first_models_robust_probe(tmp_path, capsys):
    exp = tmp_path / "exp"
    both = plan(exp, ["v.yaml", "b.yaml"], ["baseline", "robust"])
    assert listening_default(both).dir == str(exp / "probe_v_robust")
    # no robust training: the first model's first trained probe, never the random control
    assert listening_default(plan(exp, ["v.yaml", "b.yaml"], ["baseline"])).dir == str(exp / "probe_v_baseline")
    assert listening_default(plan(exp, [], [])) is None
    write_plan(exp, both)
    assert cli.main(["listening_default", "--expdir", str(exp)]) == 0
    assert capsys.readouterr().out == f"{exp / 'probe_v_robust'}\n"
    write_plan(exp, plan(exp, [], []))
    assert cli.main(["listening_default", "--expdir", str(exp)]) == 1
    assert "no trained probe experiment in the plan" in capsys.readouterr().err


def test_probe_experiments_come_from_the_plan_and_the_oracle_only_by_name(tmp_path):
    exp = tmp_path / "exp"
    write_plan(exp, plan(exp, ["v.yaml", "b.yaml"], ["robust", "baseline"], test_sets=["test"]))
    # by model, then baseline / robust / random
    assert _dirs(probe_experiments(exp)) == [
        "probe_b_baseline", "probe_b_robust", "probe_b_random",
        "probe_v_baseline", "probe_v_robust", "probe_v_random"]
    named = probe_experiments(exp, ["probe_v_robust", str(exp / "probe_b_random")])
    assert _dirs(named) == ["probe_b_random", "probe_v_robust"]
    with pytest.raises(ExperimentError, match="probe_oracle: its record is of kind oracle, not probe"):
        probe_experiments(exp, ["probe_oracle"])
    assert _dirs(probe_experiments(exp, ["probe_oracle"], ("probe", "oracle"))) == ["probe_oracle"]
    with pytest.raises(ExperimentError, match="probe_x_y: no such experiment dir"):
        probe_experiments(exp, ["probe_x_y"])


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
