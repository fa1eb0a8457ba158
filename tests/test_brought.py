"""Bringing ESPnet2 models: exp dirs and packed archives, input kinds, timing, decode guards.

Models here are untrained stock ESPnet2 models built in-process (fast); the end-to-end tests
with models trained by espnet2.bin.asr_train are in test_bring_recipe.py.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espnet_probe.asr.brought import BringError, best_checkpoint, bring, default_name
from espnet_probe.asr.decode import DecodeRefused, check_decode, ctc_min_frames
from espnet_probe.asr.model_input import InputMismatchError, model_input
from espnet_probe.layers import extract_layers
from espnet_probe.probe.model import ProbeModel, probed_layers
from test_layers import build_model, feats_batch

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]


def stock_model(tmp_path: Path, encoder: str, encoder_conf: dict, **extra):
    """An untrained raw-waveform ESPnet2 ASR model as egs2 asr.sh builds it (default STFT
    frontend at hop 128, utterance_mvn)."""
    from espnet2.tasks.asr import ASRTask

    conf = {"frontend": "default", "frontend_conf": {"n_fft": 512, "hop_length": 128, "fs": 16000},
            "normalize": "utterance_mvn", "encoder": encoder, "encoder_conf": encoder_conf,
            "decoder": None, "model_conf": {"ctc_weight": 1.0}, "token_list": TOKENS, **extra}
    path = tmp_path / f"{encoder}.yaml"
    path.write_text(yaml.safe_dump(conf))
    args = ASRTask.get_parser().parse_args(["--config", str(path), "--output_dir", str(tmp_path)])
    torch.manual_seed(0)
    return ASRTask.build_model(args).eval()


def small_transformer(input_layer: str) -> dict:
    return {"output_size": 16, "attention_heads": 2, "linear_units": 16, "num_blocks": 1,
            "input_layer": input_layer}


@pytest.mark.parametrize("encoder,input_layer,rate,centre", [
    ("conformer", "conv2d", 4, 3), ("transformer", "conv2d6", 6, 5), ("transformer", "conv2d8", 8, 7)])
def test_stock_wave_models_layers_are_timed_in_seconds(tmp_path, encoder, input_layer, rate, centre):
    """Input frames every 8 ms (hop 128) centred on k * 8 ms; ESPnet's conv subsampling centres
    output frame j on input frame rate * j + centre (kernel/stride arithmetic of its convs)."""
    model = stock_model(tmp_path, encoder, small_transformer(input_layer))
    spec = model_input(model)
    assert spec.kind == "wave" and spec.sample_rate == 16000
    assert spec.period == pytest.approx(0.008) and spec.offset == pytest.approx(-0.004)
    wav = torch.randn(2, 16000)
    layers = extract_layers(model, wav, torch.tensor([16000, 12000]))
    assert layers[0].layer.name == "input" and layers[0].hidden.shape[-1] == 80
    assert layers[0].lengths.tolist() == [126, 94]  # 1 + samples // 128
    sub = layers[1].layer
    assert sub.name == "subsample" and sub.period == pytest.approx(rate * 0.008)
    # frame j spans one period around its centre: offset = centre time of frame 0 - period / 2
    assert sub.offset == pytest.approx(-0.004 + 0.008 * (centre + 0.5) - rate * 0.008 / 2)
    assert all(s.layer.period == sub.period and s.layer.offset == sub.offset for s in layers[2:])


def test_a_model_given_the_other_kind_of_input_is_refused(tmp_path):
    wave_model = stock_model(tmp_path, "conformer", small_transformer("conv2d"))
    feats, lens = feats_batch([50, 40])
    with pytest.raises(InputMismatchError, match="takes a raw waveform at 16000 Hz.*given features"):
        extract_layers(wave_model, feats, lens)
    (tmp_path / "ours").mkdir()
    ours = build_model(tmp_path / "ours", "blstm_small.yaml", "--encoder_conf", "hidden_size=4",
                       "--encoder_conf", "projection_size=4")
    with pytest.raises(InputMismatchError, match="takes 240-dim features.*not the waveform"):
        extract_layers(ours, torch.randn(2, 8000), torch.tensor([8000, 6000]))
    # the probes take the same path: a waveform model's probe refuses features too
    probe = ProbeModel(wave_model, probed_layers(wave_model, ["input", "block1"]), hidden_size=8)
    with pytest.raises(InputMismatchError):
        probe(speech=feats, speech_lengths=lens, mel=feats, mel_lengths=lens)


def test_waveform_model_probes_predict_on_the_10ms_target_grid(tmp_path):
    model = stock_model(tmp_path, "conformer", small_transformer("conv2d"))
    probe = ProbeModel(model, probed_layers(model), hidden_size=8)
    n = torch.tensor([16000, 9000])
    frames = 1 + n // 160  # the project's centred 10 ms frames
    wav = torch.randn(2, 16000) * 0.1
    preds = probe.predict(wav, n)
    assert set(preds) == {"input", "subsample", "block1", "output"}
    assert all(p.shape == (2, int(frames.max()), 80) and not p[1, int(frames[1]):].any()
               for p in preds.values())
    mel = torch.randn(2, int(frames.max()), 240)
    loss, stats, _ = probe(speech=wav, speech_lengths=n, mel=mel, mel_lengths=frames)
    assert torch.isfinite(loss) and set(stats) == {"loss"} | {f"l1_{k}" for k in preds}
    with pytest.raises(ValueError, match="do not match the waveforms"):
        probe(speech=wav, speech_lengths=n, mel=mel, mel_lengths=frames - 3)


def test_stock_rnn_encoder_runs_batches_in_any_length_order(tmp_path):
    """ESPnet's rnn encoder packs with enforce_sorted; extract_layers sorts and un-sorts, so a
    batch in any order gives each utterance the same layers (batched STFT padding aside, which
    is ESPnet's own: the same padded batch in another order is compared)."""
    model = stock_model(tmp_path, "rnn", {"rnn_type": "lstm", "num_layers": 2, "hidden_size": 8,
                                          "output_size": 8, "subsample": [1, 2]})
    wav = torch.randn(3, 12000) * 0.1
    lens = torch.tensor([6000, 12000, 9000])  # not descending
    layers = extract_layers(model, wav, lens)
    assert [s.layer.name for s in layers] == ["input", "blstm1", "blstm2"]
    order = torch.tensor([1, 2, 0])  # descending: what the encoder itself accepts
    direct = extract_layers(model, wav[order], lens[order])
    for layer, sorted_layer in zip(layers, direct):
        assert torch.equal(layer.lengths[order], sorted_layer.lengths)
        assert torch.allclose(layer.hidden[order], sorted_layer.hidden, atol=1e-6), layer.layer.name
    assert layers[-1].lengths.tolist() == [24, 47, 36]  # hop 128 frames, then halved


def egs2_exp(root: Path, checkpoints=("valid.acc.best.pth", "valid.loss.best.pth")) -> Path:
    """An egs2-shaped exp dir whose config.yaml names files relative to the recipe dir."""
    (root / "data" / "bpe").mkdir(parents=True)
    (root / "data" / "bpe" / "bpe.model").write_bytes(b"model")
    (root / "exp" / "stats" / "train").mkdir(parents=True)
    np.savez(root / "exp" / "stats" / "train" / "feats_stats.npz", count=1, sum=np.zeros(2),
             sum_square=np.ones(2))
    exp = root / "exp" / "asr_conformer_bpe"
    exp.mkdir()
    conf = {"encoder": "conformer", "frontend": "default", "decoder": "transformer",
            "model_conf": {"ctc_weight": 0.3}, "token_type": "bpe", "bpemodel": "data/bpe/bpe.model",
            "token_list": TOKENS, "normalize": "global_mvn",
            "normalize_conf": {"stats_file": "exp/stats/train/feats_stats.npz"}}
    (exp / "config.yaml").write_text(yaml.safe_dump(conf))
    for name in checkpoints:  # bringing opens them (tensors only)
        torch.save({"encoder.w": torch.zeros(1)}, exp / name)
    return exp


def test_bring_resolves_relative_paths_and_picks_the_checkpoint_as_espnet_does(tmp_path):
    exp = egs2_exp(tmp_path / "asr1")
    record = bring(exp, tmp_path / "probe_exp" / "asr_x_brought")
    assert record["checkpoint"].endswith("valid.acc.best.pth")  # acc before loss, as asr.sh
    assert record["input"] == "wave" and record["decoding"] == {
        "method": "joint_ctc_attention", "ctc_weight": 0.3}
    conf = yaml.safe_load((tmp_path / "probe_exp" / "asr_x_brought" / "config.yaml").read_text())
    assert conf["bpemodel"] == str((tmp_path / "asr1" / "data" / "bpe" / "bpe.model").resolve())
    assert Path(conf["normalize_conf"]["stats_file"]).is_file()
    assert best_checkpoint(tmp_path / "probe_exp" / "asr_x_brought").name == "valid.acc.best.pth"
    # a model file asked for by name wins; one that is not there is named
    assert best_checkpoint(exp, "valid.loss.best.pth").name == "valid.loss.best.pth"
    with pytest.raises(FileNotFoundError, match="valid.acc.ave.pth not found"):
        best_checkpoint(exp, "valid.acc.ave.pth")
    # nothing ESPnet would pick: the error lists what is there
    (exp / "valid.acc.best.pth").unlink()
    (exp / "valid.loss.best.pth").rename(exp / "3epoch.pth")
    with pytest.raises(FileNotFoundError, match="it has 3epoch.pth: give one with --asr_model_file"):
        best_checkpoint(exp)


def test_bring_names_a_missing_relative_path_and_where_it_looked(tmp_path):
    exp = egs2_exp(tmp_path / "asr1")
    moved = tmp_path / "elsewhere" / "exp" / exp.name
    moved.parent.mkdir(parents=True)
    exp.rename(moved)  # its grandparent is no longer the recipe dir
    with pytest.raises(BringError, match=r"bpemodel 'data/bpe/bpe.model' not found .*give --asr_recipe_dir"):
        bring(moved, tmp_path / "exp" / "asr_x_brought")
    assert not (tmp_path / "exp" / "asr_x_brought").exists()  # nothing half-made
    record = bring(moved, tmp_path / "exp" / "asr_x_brought", recipe_dir=tmp_path / "asr1")
    assert record["settings"]["recipe_dir"] == str(tmp_path / "asr1")


def test_bring_resolves_an_s3prl_upstreams_nested_checkpoint_path(tmp_path):
    exp = egs2_exp(tmp_path / "asr1")
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    conf.update(frontend="s3prl", frontend_conf={
        "frontend_conf": {"upstream": "hubert_local", "path_or_url": "downloads/hubert.pt"},
        "multilayer_feature": True})
    (exp / "config.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(BringError, match=r"frontend_conf.frontend_conf.path_or_url "
                                         r"'downloads/hubert.pt' not found"):
        bring(exp, tmp_path / "probe_exp" / "asr_x_brought")
    (tmp_path / "asr1" / "downloads").mkdir()
    (tmp_path / "asr1" / "downloads" / "hubert.pt").write_bytes(b"upstream")
    bring(exp, tmp_path / "probe_exp" / "asr_x_brought")
    got = yaml.safe_load((tmp_path / "probe_exp" / "asr_x_brought" / "config.yaml").read_text())
    assert got["frontend_conf"]["frontend_conf"]["path_or_url"] == str(
        (tmp_path / "asr1" / "downloads" / "hubert.pt").resolve())
    assert got["frontend_conf"]["multilayer_feature"] is True
    # the user's config is untouched
    assert yaml.safe_load((exp / "config.yaml").read_text())["frontend_conf"]["frontend_conf"][
        "path_or_url"] == "downloads/hubert.pt"


def test_bring_unpacks_a_packed_model_and_refuses_unsafe_archives(tmp_path):
    root = tmp_path / "asr1"
    exp = egs2_exp(root)
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("meta.yaml", yaml.safe_dump({
            "files": {"asr_model_file": "exp/asr_conformer_bpe/valid.acc.best.pth"},
            "yaml_files": {"asr_train_config": "exp/asr_conformer_bpe/config.yaml"}}))
        for f in ("exp/asr_conformer_bpe/config.yaml", "exp/asr_conformer_bpe/valid.acc.best.pth",
                  "data/bpe/bpe.model", "exp/stats/train/feats_stats.npz"):
            z.write(root / f, f)
    out = tmp_path / "exp" / "asr_model_brought"
    record = bring(archive, out)
    assert record["packed"] and Path(record["checkpoint"]).is_file()
    assert Path(record["checkpoint"]).is_relative_to(out.resolve() / "packed")
    conf = yaml.safe_load((out / "config.yaml").read_text())
    assert Path(conf["bpemodel"]).is_file() and Path(conf["bpemodel"]).is_relative_to(out.resolve())
    assert default_name(archive) == "model" and default_name(exp) == "conformer_bpe"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("meta.yaml", "files: {}\n")
        z.writestr("../../outside.txt", "x")
    with pytest.raises(BringError, match="outside the unpack dir"):
        bring(evil, tmp_path / "exp" / "asr_evil_brought")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path.parent / "outside.txt").exists()
    with pytest.raises(BringError, match="not a zip or tar"):
        bring(exp / "config.yaml", tmp_path / "exp" / "asr_cfg_brought")


def test_decodes_that_cannot_be_right_are_refused():
    refs_need = {f"u{i}": 5 for i in range(4)}
    frames = {f"u{i}": 40 for i in range(4)}
    with pytest.raises(DecodeRefused, match="every one of the 4 hypotheses is empty"):
        check_decode({u: "" for u in frames}, frames, refs_need, "m on test")
    # one encoder frame per utterance (features given to a waveform model, say)
    with pytest.raises(DecodeRefused, match="4 of 4 utterances get fewer encoder frames"):
        check_decode({u: "a" for u in frames}, {u: 1 for u in frames}, refs_need, "m on test")
    warnings = check_decode({u: f"a {u}" for u in frames}, {**frames, "u3": 2}, refs_need, "m on test")
    assert "u3: 2 for 5" in warnings[0]
    assert check_decode({u: u for u in frames}, frames, refs_need, "m") == []
    same = check_decode({u: "the the" for u in frames}, frames, refs_need, "m")
    assert len(same) == 1 and "all 4 hypotheses are the same text" in same[0]
    # hypotheses that do not depend on the input: a CTC model collapsed onto one token (as the
    # 2026-12-02 egs baseline: "A A A ..." of any length), or the same text for every utterance
    with pytest.raises(DecodeRefused, match="made of the one symbol 'A'"):
        check_decode({u: " ".join("A" * (3 + i)) for i, u in enumerate(frames)}, frames, refs_need, "m")
    many = {f"v{i}": 40 for i in range(12)}
    with pytest.raises(DecodeRefused, match="all 12 hypotheses are the same text"):
        check_decode({u: "the the" for u in many}, many, {u: 5 for u in many}, "m")
    assert ctc_min_frames([3, 3, 4, 4, 4, 5]) == 6 + 3  # a blank between every repeat


@pytest.mark.parametrize("encoder,conf,names", [
    ("e_branchformer", {"output_size": 16, "attention_heads": 2, "linear_units": 16,
                        "cgmlp_linear_units": 16, "num_blocks": 2, "input_layer": "conv2d"},
     ["input", "subsample", "block1", "block2", "output"]),
    ("branchformer", {"output_size": 16, "attention_heads": 2, "cgmlp_linear_units": 16,
                      "num_blocks": 2, "input_layer": "conv2d"},
     ["input", "subsample", "block1", "block2", "output"]),
    ("vgg_rnn", {"rnn_type": "lstm", "num_layers": 2, "hidden_size": 8, "output_size": 8},
     ["input", "vgg", "blstm1", "blstm2"]),
])
def test_every_stock_encoder_family_lists_and_times_its_layers(tmp_path, encoder, conf, names):
    model = stock_model(tmp_path, encoder, conf)
    wav = torch.randn(2, 16000) * 0.1
    lens = torch.tensor([16000, 16000])
    layers = extract_layers(model, wav, lens)
    assert [s.layer.name for s in layers] == names
    with torch.no_grad():
        out, olens = model.encode(wav.clone(), lens)
    last = layers[-1]
    assert last.lengths.tolist() == olens.tolist()
    assert last.layer.period == pytest.approx(0.032)  # 4x subsampling (conv2d or VGG's two pools) of 8 ms
    assert torch.allclose(last.hidden, out, atol=1e-5)
    # mixed lengths: the lengths ESPnet's own batched encode gives (padding is zeroed here, where
    # ESPnet leaves utterance_mvn offsets that e_branchformer's convolutions then read)
    lens = torch.tensor([12000, 16000])
    with torch.no_grad():
        _, olens = model.encode(wav[[1, 0]].clone(), lens[[1, 0]])
    assert extract_layers(model, wav, lens)[-1].lengths.tolist() == olens[[1, 0]].tolist()
