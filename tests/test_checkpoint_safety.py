"""A checkpoint a user brings is data: opening it never runs code, in any entry point.

The payload is what a hostile checkpoint carries (tests/hostile.py): unpickling it runs
``touch MARKER``.  Every entry point that opens a checkpoint
must refuse it in one line that names the file and the opt-in, and MARKER must never appear.
The clean counterparts load (here, or in the integration tests that run every stage on
clean checkpoints: test_probe, test_recipe, test_bring_recipe)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

import hostile
from conftest import REPO
from test_offline import list_layers_run
from espnet_probe.utils.checkpoint import (TRUST_ENV, CheckpointError, UntrustedCheckpointError,
                                           checked_init_params, load_checkpoint, load_state_dict)

FIXTURE = REPO / "tests" / "fixtures" / "asr_tiny"


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "the checkpoint's code ran"


def payload_checkpoint(path: Path, marker: Path, state: dict | None = None) -> Path:
    """The fixture model's weights (or ``state``) with the payload."""
    return hostile.payload_checkpoint(
        path, marker, load_state_dict(FIXTURE / "valid.loss.best.pth") if state is None else state)


def asr_exp(root: Path, checkpoint_name: str = "valid.loss.best.pth", marker: Path | None = None) -> Path:
    """The tiny fixture model as an exp dir: clean, or with a payload checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    # the fixture's config names a stats file long gone: write one from the checkpoint's own
    conf = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    state = load_state_dict(FIXTURE / "valid.loss.best.pth")
    mean, std = state["normalize.mean"].double().numpy(), state["normalize.std"].double().numpy()
    np.savez(root / "feats_stats.npz", count=np.array(1.0), sum=mean, sum_square=std**2 + mean**2)
    conf["normalize_conf"] = {**conf["normalize_conf"], "stats_file": str(root / "feats_stats.npz")}
    (root / "config.yaml").write_text(yaml.safe_dump(conf))
    if marker is None:
        shutil.copy(FIXTURE / "valid.loss.best.pth", root / checkpoint_name)
    else:
        payload_checkpoint(root / checkpoint_name, marker)
    return root


def one_error_line(stderr: str, prog: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def assert_refused(stderr: str, prog: str, path: Path) -> None:
    line = one_error_line(stderr, prog)
    assert str(path) in line and "refused" in line and "--trust_checkpoints true" in line, line


# ----------------------------------------------------------------------------- the loader

def test_loader_refuses_code_and_loads_tensors_and_numpy_statistics(tmp_path, marker):
    bad = payload_checkpoint(tmp_path / "bad.pth", marker)
    with pytest.raises(UntrustedCheckpointError, match="posix.system"):
        load_checkpoint(bad)
    # ESPnet's trainer keeps numpy floats in its reporter statistics: data, not code
    torch.save({"model": {"w": torch.ones(2)}, "reporter": {"stats": {1: {"valid": {"loss": np.float64(0.5)}}}}},
               tmp_path / "checkpoint.pth")
    assert load_checkpoint(tmp_path / "checkpoint.pth")["reporter"]["stats"][1]["valid"]["loss"] == 0.5
    assert list(load_state_dict(tmp_path / "checkpoint.pth")) == ["w"]
    # a file that is not a checkpoint, or is cut short, is named in one line
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(1000)}, good)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cut.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")
    torch.save({"w": torch.ones(2), "step": 3}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="not tensors: step"):
        load_state_dict(tmp_path / "mixed.pth")


def test_the_opt_in_unpickles_in_full(tmp_path, monkeypatch):
    ran = tmp_path / "RAN"
    bad = payload_checkpoint(tmp_path / "bad.pth", ran)
    monkeypatch.setenv(TRUST_ENV, "true")
    assert "__evil__" in load_checkpoint(bad)  # and so the code ran, as documented
    assert ran.exists()


def test_the_only_full_unpickling_is_the_loaders_opt_in():
    hits = subprocess.run(["grep", "-rn", "weights_only=False", str(REPO / "espnet_probe")],
                          capture_output=True, text=True).stdout.splitlines()
    assert len(hits) == 1 and "espnet_probe/utils/checkpoint.py" in hits[0], hits


def test_init_param_files_reach_espnet_as_checked_copies(tmp_path, marker):
    clean = FIXTURE / "valid.loss.best.pth"
    out = tmp_path / "exp"
    argv = ["--init_param", f"{clean}:encoder:encoder", "--output_dir", str(out)]
    with checked_init_params(argv) as checked:
        copy, keys = checked[1].split(":", 1)
        assert keys == "encoder:encoder" and checked[2:] == ["--output_dir", str(out)]
    # kept beside the experiment, so the config.yaml ESPnet writes names a file that exists
    assert Path(copy) == out / "checked_init" / "0_valid.loss.best.pth"
    assert torch.load(copy, weights_only=True).keys() == load_state_dict(clean).keys()
    with checked_init_params(["--init_param", str(clean)]) as checked:
        assert Path(checked[1]).is_file()
    assert not Path(checked[1]).exists()  # no output dir: a temporary copy
    bad = payload_checkpoint(tmp_path / "bad.pth", marker)
    with pytest.raises(UntrustedCheckpointError):
        with checked_init_params(["--init_param", str(clean), str(bad)]):
            pass


# ----------------------------------------------------------------------------- entry points

def test_list_layers_refuses_a_payload_and_a_mismatch_in_one_line(tmp_path, marker, capsys):
    from espnet_probe.bin import probe_train

    config = str(FIXTURE / "config.yaml")
    bad = payload_checkpoint(tmp_path / "valid.acc.ave.pth", marker)
    assert probe_train.main(["--list_layers", config, str(bad)]) == 1
    assert_refused(capsys.readouterr().err, "probe_train", bad)
    state = load_state_dict(FIXTURE / "valid.loss.best.pth")
    state.pop("ctc.ctc_lo.bias")
    state["encoder.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "other.pth")
    assert probe_train.main(["--list_layers", config, str(tmp_path / "other.pth")]) == 1
    line = one_error_line(capsys.readouterr().err, "probe_train")
    assert "does not match" in line and "1 missing (ctc.ctc_lo.bias)" in line and "encoder.extra" in line
    # the command line itself, on a clean checkpoint (the run test_offline checks too)
    proc = list_layers_run()
    assert proc.returncode == 0, proc.stderr
    assert "blstm1" in proc.stdout
    # ESPnet's attention module's flash-attention notice is silenced at its source
    assert "Flash Attention" not in proc.stdout + proc.stderr


def test_bring_refuses_a_payload_exp_dir_and_archive(tmp_path, marker, capsys):
    from espnet_probe.bin import bring_asr

    exp = asr_exp(tmp_path / "recipe" / "exp" / "asr_evil", "valid.acc.ave.pth", marker)
    assert bring_asr.main(["--exp_root", str(tmp_path / "ours"), "--asr_exps", str(exp)]) == 1
    assert_refused(capsys.readouterr().err, "bring_asr", exp / "valid.acc.ave.pth")
    assert not (tmp_path / "ours" / "asr_evil_brought").exists()

    archive = tmp_path / "evil_packed.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("meta.yaml", yaml.safe_dump({"yaml_files": {"asr_train_config": "exp/config.yaml"},
                                                "files": {"asr_model_file": "exp/model.pth"}}))
        z.write(exp / "config.yaml", "exp/config.yaml")
        z.write(exp / "valid.acc.ave.pth", "exp/model.pth")
    assert bring_asr.main(["--exp_root", str(tmp_path / "ours"), "--asr_exps", str(archive)]) == 1
    assert "model.pth: refused" in one_error_line(capsys.readouterr().err, "bring_asr")

    clean = asr_exp(tmp_path / "recipe" / "exp" / "asr_clean", "valid.acc.ave.pth")
    assert bring_asr.main(["--exp_root", str(tmp_path / "ours"), "--asr_exps", str(clean)]) == 0


def test_stage_6_decode_refuses_a_payload(tmp_path, marker, capsys):
    from espnet_probe.bin import asr_decode

    exp = asr_exp(tmp_path / "asr_evil", marker=marker)
    assert asr_decode.main(["--asr_exp", str(exp), "--feats_dir", str(tmp_path / "dump"),
                            "--out", str(tmp_path / "decode")]) == 1
    assert_refused(capsys.readouterr().err, "asr_decode", exp / "valid.loss.best.pth")
    assert not (tmp_path / "decode").exists()


def _feats_dir(root: Path, n: int = 3) -> Path:
    """Random (T, 240) features as a dump dir, with a speaker per utterance."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with kaldiio.WriteHelper(f"ark,scp:{root}/feats.ark,{root}/feats.scp") as w:
        for i in range(n):
            w[f"spk{i}-utt{i}"] = rng.standard_normal((60 + 10 * i, 240)).astype(np.float32)
    (root / "feats_shape").write_text("".join(f"spk{i}-utt{i} {60 + 10 * i},240\n" for i in range(n)))
    (root / "utt2spk").write_text("".join(f"spk{i}-utt{i} spk{i}\n" for i in range(n)))
    return root


def test_stage_7_probe_training_refuses_a_payload_model_and_init_param(tmp_path, marker, capsys):
    from espnet_probe.bin import probe_train

    feats = _feats_dir(tmp_path / "dump")
    common = ["--asr_train_config", str(FIXTURE / "config.yaml"), "--train_dump_dir", str(feats),
              "--valid_dump_dir", str(feats), "--ngpu", "0", "--max_epoch", "1",
              "--output_dir", str(tmp_path / "probe")]
    bad = payload_checkpoint(tmp_path / "asr" / "valid.loss.best.pth", marker)
    assert probe_train.main(common + ["--asr_model_file", str(bad)]) == 1
    assert_refused(capsys.readouterr().err, "probe_train", bad)
    assert probe_train.main(common + ["--asr_model_file", str(FIXTURE / "valid.loss.best.pth"),
                                      "--init_param", str(bad)]) == 1
    assert_refused(capsys.readouterr().err, "probe_train", bad)


def _probe_exp(root: Path, marker: Path | None) -> Path:
    """A probe experiment of the fixture model: its config, and a clean or payload checkpoint."""
    from espnet_probe.tasks.probe import ProbeTask

    root.mkdir(parents=True)
    conf = {"asr_train_config": str(FIXTURE / "config.yaml"),
            "asr_model_file": str(FIXTURE / "valid.loss.best.pth"), "asr_init": "trained",
            "layers": ["input", "blstm1"], "seed": 0, "target": "heard", "n_mels": 80,
            "target_period": 0.01, "probe_conf": {"hidden_size": 8, "highway_layers": 1}}
    (root / "config.yaml").write_text(yaml.safe_dump(conf))
    model, _ = ProbeTask.build_model_from_file(root / "config.yaml", None)
    if marker is None:
        torch.save(model.state_dict(), root / "valid.layer_best.pth")
    else:
        payload_checkpoint(root / "valid.layer_best.pth", marker, model.state_dict())
    return root


def test_stage_8_probe_decoding_refuses_a_payload_and_loads_a_clean_probe(tmp_path, marker, capsys):
    from espnet_probe.bin import probe_decode

    feats = _feats_dir(tmp_path / "dump")
    bad = _probe_exp(tmp_path / "probe_evil", marker)
    assert probe_decode.main(["--probe_exp", str(bad), "--feats_dir", str(feats)]) == 1
    assert_refused(capsys.readouterr().err, "probe_decode", bad / "valid.layer_best.pth")
    assert not (bad / "decode_dump").exists()
    clean = _probe_exp(tmp_path / "probe_clean", None)
    assert probe_decode.main(["--probe_exp", str(clean), "--feats_dir", str(feats)]) == 0
    assert (clean / "decode_dump" / "blstm1" / "mel.scp").is_file()


def test_stage_10_speaker_id_probe_and_speaker_encoder_refuse_a_payload(tmp_path, marker, capsys):
    from espnet_probe.bin import speaker_id_probe
    from espnet_probe.speaker.embed import ResNetEmbedder

    exp = asr_exp(tmp_path / "asr_evil", marker=marker)
    feats = _feats_dir(tmp_path / "dump")
    assert speaker_id_probe.main(["--asr_exp", str(exp), "--feats_dir", str(feats),
                                  "--out", str(tmp_path / "sid")]) == 1
    assert_refused(capsys.readouterr().err, "speaker_id_probe", exp / "valid.loss.best.pth")

    speaker = tmp_path / "speaker_evil"
    speaker.mkdir()
    (speaker / "config.yaml").write_text(yaml.safe_dump({"encoder_conf": {}}))
    payload_checkpoint(speaker / "valid.loss.best.pth", marker, {"encoder.w": torch.zeros(1)})
    with pytest.raises(UntrustedCheckpointError, match="valid.loss.best.pth: refused"):
        ResNetEmbedder(speaker)


def test_asr_training_refuses_a_payload_init_param(tmp_path, marker, capsys):
    from espnet_probe.bin import asr_train

    bad = payload_checkpoint(tmp_path / "baseline" / "valid.loss.best.pth", marker)
    assert asr_train.main(["--config", str(FIXTURE / "config.yaml"), "--init_param",
                           f"{bad}:::normalize", "--output_dir", str(tmp_path / "robust")]) == 1
    assert_refused(capsys.readouterr().err, "asr_train", bad)


def test_whisper_checkpoint_with_a_payload_is_refused(tmp_path, marker, capsys):
    from espnet_probe.bin import bring_asr, probe_train

    pt = tmp_path / "tiny.en.pt"
    hostile.payload_checkpoint(pt, marker, {"dims": {"n_mels": 80}, "model_state_dict": {}})
    assert probe_train.main(["--list_layers", str(pt)]) == 1
    assert_refused(capsys.readouterr().err, "probe_train", pt)
    assert bring_asr.main(["--exp_root", str(tmp_path / "exp"), "--asr_exps", str(pt)]) == 1
    assert_refused(capsys.readouterr().err, "bring_asr", pt)
