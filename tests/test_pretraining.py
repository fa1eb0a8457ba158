"""Layer-wise encoder pretraining: the stage commands given to ESPnet, resume and bad schedules."""

from pathlib import Path

import pytest
import yaml

from espnet_probe.asr.pretraining import PretrainingError, parse_schedule, run_with_pretraining


def write_config(path: Path, **extra) -> Path:
    conf = {"encoder": "blstm", "encoder_conf": {"num_layers": 5, "subsample": [1, 2, 2, 2, 1]},
            "max_epoch": 20}
    conf.update(extra)
    path.write_text(yaml.safe_dump(conf))
    return path


class FakeESPnet:
    """Records every ESPnet command line and leaves the epoch checkpoints it would write."""

    def __init__(self):
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        out = Path(argv[argv.index("--output_dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        epochs = int(argv[len(argv) - 1 - argv[::-1].index("--max_epoch") + 1]) if "--max_epoch" in argv else 1
        (out / f"{epochs}epoch.pth").write_text("weights")


def test_stages_grow_the_encoder_and_chain_checkpoints(tmp_path):
    config = write_config(tmp_path / "asr.yaml", encoder_pretraining={"layers": [1, 3], "epochs": 4})
    out = tmp_path / "exp"
    fake = FakeESPnet()
    run_with_pretraining(["--config", str(config), "--output_dir", str(out), "--max_epoch", "20"], fake)

    assert len(fake.calls) == 3
    first, second, full = fake.calls
    stripped = yaml.safe_load((out / "asr_config.yaml").read_text())
    assert "encoder_pretraining" not in stripped and stripped["encoder_conf"]["num_layers"] == 5
    for argv in fake.calls:
        assert argv[argv.index("--config") + 1] == str(out / "asr_config.yaml")
        assert argv.count("--config") == 1 and argv.count("--output_dir") == 1

    assert first[first.index("--output_dir") + 1] == str(out / "pretrain" / "L1")
    assert "num_layers=1" in first and "subsample=[1]" in first and "--init_param" not in first
    assert first[first.index("--max_epoch") + 1] == "4" and first.count("--max_epoch") == 1

    assert "num_layers=3" in second and "subsample=[1, 2, 2]" in second
    assert second[second.index("--init_param") + 1] == str(out / "pretrain" / "L1" / "4epoch.pth")
    assert second[second.index("--ignore_init_mismatch") + 1] == "true"

    assert full[full.index("--output_dir") + 1] == str(out)
    assert full[full.index("--max_epoch") + 1] == "20"
    assert full[full.index("--init_param") + 1] == str(out / "pretrain" / "L3" / "4epoch.pth")
    assert not any(a.startswith("num_layers=") for a in full)


def test_finished_stages_are_skipped_on_rerun(tmp_path):
    config = write_config(tmp_path / "asr.yaml", encoder_pretraining={"layers": [3], "epochs": 2})
    argv = ["--config", str(config), "--output_dir", str(tmp_path / "exp")]
    run_with_pretraining(argv, FakeESPnet())
    again = FakeESPnet()
    run_with_pretraining(argv, again)
    assert len(again.calls) == 1 and again.calls[0][again.calls[0].index("--output_dir") + 1] == str(tmp_path / "exp")


def test_stage_without_its_checkpoint_is_an_error(tmp_path):
    config = write_config(tmp_path / "asr.yaml", encoder_pretraining={"layers": [3], "epochs": 2})
    with pytest.raises(PretrainingError, match="finished without 2epoch.pth"):
        run_with_pretraining(["--config", str(config), "--output_dir", str(tmp_path / "exp")],
                             lambda argv: None)


def test_a_model_given_its_own_init_has_no_growth_stages(tmp_path):
    config = write_config(tmp_path / "asr.yaml", encoder_pretraining={"layers": [1, 3], "epochs": 4})
    out = tmp_path / "exp"
    fake = FakeESPnet()
    run_with_pretraining(["--config", str(config), "--output_dir", str(out),
                          "--init_param", "exp/asr_baseline/valid.loss.ave.pth:::normalize"], fake)
    [full] = fake.calls
    assert full[full.index("--output_dir") + 1] == str(out)
    assert full[full.index("--config") + 1] == str(out / "asr_config.yaml")
    assert full.count("--init_param") == 1 and not (out / "pretrain").exists()


def test_config_without_schedule_runs_espnet_unchanged(tmp_path):
    config = write_config(tmp_path / "asr.yaml")
    fake = FakeESPnet()
    argv = ["--config", str(config), "--output_dir", str(tmp_path / "exp")]
    run_with_pretraining(argv, fake)
    assert fake.calls == [argv]


@pytest.mark.parametrize("section, message", [
    ({"layers": [3, 1], "epochs": 2}, "increase strictly"),
    ({"layers": [5], "epochs": 2}, "below encoder_conf.num_layers=5"),
    ({"layers": [], "epochs": 2}, "non-empty list"),
    ({"layers": [2], "epochs": 0}, "positive integer"),
    ({"layers": [1, 3], "epochs": [4]}, "one per stage"),
    ({"layers": [2], "epochs": 2, "lr": 1}, "keys 'layers' and 'epochs'"),
])
def test_bad_schedules_are_rejected_with_the_config_named(tmp_path, section, message):
    config = write_config(tmp_path / "asr.yaml", encoder_pretraining=section)
    conf = yaml.safe_load(config.read_text())
    with pytest.raises(PretrainingError, match=message) as err:
        parse_schedule(conf, str(config))
    assert str(config) in str(err.value)


def test_robust_epochs_get_the_clean_sets_batch_count_from_espnets_sampler(tmp_path, capsys):
    """count_batches (run.sh --robust_epoch clean) counts the batches ESPnet's numel sampler
    makes of a shape file, with --asr_args batch options over the config's."""
    from espnet_probe.bin.count_batches import main as count_main

    shape = tmp_path / "feats_shape"
    shape.write_text("".join(f"u{i:03d} {100 + 10 * i},240\n" for i in range(40)))
    config = tmp_path / "asr.yaml"
    config.write_text("batch_type: numel\nbatch_bins: 240000\nencoder_pretraining: {layers: [1], epochs: 1}\n")
    total_frames = sum(100 + 10 * i for i in range(40))  # 11,800 frames x 240 = 2.8M bins
    assert count_main(["--config", str(config), "--shape_file", str(shape)]) == 0
    batches = int(capsys.readouterr().out)
    # ESPnet's numel batches fill up to about batch_bins each (it may overshoot by one utterance)
    assert 0.75 * total_frames * 240 / 240000 <= batches <= total_frames * 240 / 240000 + 4
    assert count_main(["--config", str(config), "--shape_file", str(shape),
                       "--max_epoch", "3", "--batch_bins", "1200000"]) == 0
    assert int(capsys.readouterr().out) <= batches / 3  # 5x the bins: a third or fewer


def test_each_stage_may_have_its_own_number_of_epochs(tmp_path):
    config = write_config(tmp_path / "asr.yaml", encoder_pretraining={"layers": [1, 3], "epochs": [5, 3]})
    fake = FakeESPnet()
    run_with_pretraining(["--config", str(config), "--output_dir", str(tmp_path / "exp")], fake)
    first, second, _ = fake.calls
    assert first[first.index("--max_epoch") + 1] == "5" and second[second.index("--max_epoch") + 1] == "3"
    assert second[second.index("--init_param") + 1] == str(tmp_path / "exp" / "pretrain" / "L1" / "5epoch.pth")
