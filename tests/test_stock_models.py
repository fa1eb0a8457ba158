"""The stock-model helper: three tiny stock ESPnet2 ASR models trained on real LibriSpeech speech
the way egs2's asr.sh trains them, checked as a real egs2 exp dir would be."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import yaml

from stock_models import (NBPE, STOCK_KINDS, StockRecipe, inference_model_name,
                          librispeech_subset, pack_model, stock_recipe)

pytestmark = pytest.mark.integration

# what each kind must leave in exp/asr_<kind> besides the per-epoch checkpoints
EXPECTED = {
    "conformer_hybrid_bpe": dict(criterion="valid.acc", encoder="ConformerEncoder",
                                 decoder="TransformerDecoder", ctc_weight=0.3, token_type="bpe",
                                 normalize="global_mvn", specaug=True, subsampling=4),
    "transformer_conv2d6": dict(criterion="valid.loss", encoder="TransformerEncoder",
                                decoder=None, ctc_weight=1.0, token_type="char",
                                normalize="utterance_mvn", specaug=False, subsampling=6),
    "rnn": dict(criterion="valid.acc", encoder="RNNEncoder", decoder="RNNDecoder",
                ctc_weight=0.5, token_type="char", normalize="global_mvn", specaug=False,
                subsampling=4),
}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> StockRecipe:
    subset = librispeech_subset()
    if not subset.is_dir():
        pytest.skip(f"LibriSpeech train-clean-5 not found at {subset} "
                    "(set PROBE_SHARED_DATA to the directory holding LibriSpeech/)")
    return stock_recipe(tmp_path_factory)


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _config(recipe: StockRecipe, kind: str) -> dict:
    with recipe.config(kind).open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_training_times_are_recorded(recipe):
    # the session's recipe: other tests may have added kinds (test_bring_recipe's Whisper)
    assert set(STOCK_KINDS) <= set(recipe.train_seconds)
    for kind in STOCK_KINDS:
        print(f"stock model {kind}: {recipe.train_seconds[kind]:.1f} s "
              "(collect stats when needed + training)")
        assert 0 < recipe.train_seconds[kind] < 600


def test_recipe_layout(recipe):
    r = recipe.recipe_dir
    for split in ("train", "valid"):
        d = r / "data" / split
        tables = {n: dict(line.split(" ", 1) for line in (d / n).read_text().splitlines())
                  for n in ("wav.scp", "text", "utt2spk")}
        assert set(tables["wav.scp"]) == set(tables["text"]) == set(tables["utt2spk"])
        assert len(tables["wav.scp"]) == (36 if split == "train" else 8)
        assert all(Path(p).is_absolute() and p.endswith(".flac") and Path(p).is_file()
                   for p in tables["wav.scp"].values())
        assert (d / "spk2utt").read_text().count("\n") == (6 if split == "train" else 2)
    speakers = {split: {line.split()[0] for line in
                        (r / "data" / split / "spk2utt").read_text().splitlines()}
                for split in ("train", "valid")}
    assert not speakers["train"] & speakers["valid"]

    bpe = r / "data" / "token_list" / f"bpe_unigram{NBPE}"
    tokens = bpe.joinpath("tokens.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert len(tokens) == NBPE and len(set(tokens)) == NBPE   # 37 pieces + 3 specials
    assert "▁" in tokens and any(len(t) > 2 and t.startswith("▁") for t in tokens)
    assert (bpe / "bpe.model").is_file()
    chars = (r / "data/token_list/char/tokens.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert chars[:2] == ["<blank>", "<unk>"] and chars[-1] == "<sos/eos>"
    assert "<space>" in chars and "E" in chars and "'" in chars
    assert all(len(c) == 1 for c in chars[2:-1] if c != "<space>")


@pytest.mark.parametrize("kind", STOCK_KINDS)
def test_exp_dir_is_a_real_egs2_exp_dir(recipe, kind):
    want = EXPECTED[kind]
    exp = recipe.exp(kind)
    assert exp == recipe.recipe_dir / "exp" / f"asr_{kind}"
    conf = _config(recipe, kind)

    # every path is relative to the recipe dir, and resolves from there
    assert not [s for s in _strings(conf) if os.path.isabs(s)]
    assert conf["output_dir"] == f"exp/asr_{kind}"
    assert conf["config"] == f"conf/train_asr_{kind}.yaml"
    assert conf["train_data_path_and_name_and_type"] == [
        ["data/train/wav.scp", "speech", "sound"], ["data/train/text", "text", "text"]]
    assert conf["valid_data_path_and_name_and_type"][0] == ["data/valid/wav.scp", "speech",
                                                            "sound"]
    stats = f"exp/asr_stats_raw_{'bpe%d' % NBPE if want['token_type'] == 'bpe' else 'char'}"
    assert conf["train_shape_file"] == [f"{stats}/train/speech_shape",
                                        f"{stats}/train/text_shape.{want['token_type']}"]
    for rel in conf["train_shape_file"] + conf["valid_shape_file"]:
        assert (recipe.recipe_dir / rel).is_file(), rel
    assert conf["token_type"] == want["token_type"]
    # the token list is inlined into config.yaml, as ESPnet always does
    assert conf["token_list"][0] == "<blank>" and conf["token_list"][-1] == "<sos/eos>"
    if want["token_type"] == "bpe":
        assert conf["bpemodel"] == f"data/token_list/bpe_unigram{NBPE}/bpe.model"
        assert (recipe.recipe_dir / conf["bpemodel"]).is_file()
    else:
        assert conf["bpemodel"] is None
    assert conf["normalize"] == want["normalize"]
    if want["normalize"] == "global_mvn":
        assert conf["normalize_conf"]["stats_file"] == f"{stats}/train/feats_stats.npz"
        assert (recipe.recipe_dir / conf["normalize_conf"]["stats_file"]).is_file()

    # the model is what the kind says
    assert conf["frontend"] == "default"
    assert conf["frontend_conf"] == {"n_fft": 512, "hop_length": 128, "n_mels": 80, "fs": "16k"}
    assert (conf["specaug"] == "specaug") is want["specaug"]
    assert conf["model_conf"]["ctc_weight"] == want["ctc_weight"]
    assert conf["max_epoch"] == 2 and conf["seed"] == 0 and conf["ngpu"] == 0

    # checkpoints: per epoch, the n-best average (symlinked) and the best epoch (symlinked)
    crit = want["criterion"]
    names = {p.name for p in exp.iterdir()}
    assert {"config.yaml", "train.log", "checkpoint.pth", "latest.pth", "1epoch.pth",
            "2epoch.pth", "images", f"{crit}.ave.pth", f"{crit}.ave_2best.pth",
            f"{crit}.best.pth"} <= names, sorted(names)
    assert os.readlink(exp / f"{crit}.ave.pth") == f"{crit}.ave_2best.pth"
    assert os.readlink(exp / f"{crit}.best.pth") in {"1epoch.pth", "2epoch.pth"}
    assert inference_model_name(exp) == f"{crit}.ave.pth"
    print(f"{kind}: exp/asr_{kind} holds {sorted(names)}")


@pytest.mark.parametrize("kind", STOCK_KINDS)
def test_model_loads_from_the_recipe_dir_and_encodes_speech(recipe, kind, monkeypatch):
    import soundfile as sf
    import torch
    from espnet2.tasks.asr import ASRTask

    want = EXPECTED[kind]
    monkeypatch.chdir(recipe.recipe_dir)
    model, args = ASRTask.build_model_from_file(
        f"exp/asr_{kind}/config.yaml", f"exp/asr_{kind}/{inference_model_name(recipe.exp(kind))}",
        "cpu")
    model.eval()
    # the probes' data entries are chosen from the config alone: it must say what the model takes
    from espnet_probe.data.model_inputs import config_input_kind
    from espnet_probe.asr.model_input import model_input
    assert config_input_kind(f"exp/asr_{kind}/config.yaml") == model_input(model).kind == "wave"
    assert type(model.encoder).__name__ == want["encoder"]
    assert (type(model.decoder).__name__ if model.decoder is not None else None) == want["decoder"]
    assert model.ctc_weight == want["ctc_weight"]
    assert type(model.normalize).__name__ == {"global_mvn": "GlobalMVN",
                                              "utterance_mvn": "UtteranceMVN"}[want["normalize"]]
    assert len(args.token_list) == model.vocab_size

    wav_path = Path(recipe.recipe_dir / "data/valid/wav.scp").read_text().split()[1]
    wav, fs = sf.read(wav_path, dtype="float32")
    assert fs == 16000
    speech = torch.from_numpy(wav)[None]
    with torch.no_grad():
        enc, enc_lens = model.encode(speech, torch.tensor([speech.shape[1]]))
    frames = speech.shape[1] // 128 + 1          # STFT frames with hop 128, centred
    assert enc.shape[0] == 1 and enc.shape[2] == model.encoder.output_size()
    assert int(enc_lens[0]) == enc.shape[1]
    assert abs(enc.shape[1] - frames / want["subsampling"]) <= 2, (enc.shape, frames)
    assert torch.isfinite(enc).all()


@pytest.mark.parametrize("kind", STOCK_KINDS)
def test_pack_model_gives_a_self_contained_zip(recipe, kind, tmp_path):
    from espnet2.main_funcs.pack_funcs import unpack
    from espnet2.tasks.asr import ASRTask

    want = EXPECTED[kind]
    before = sorted(p.name for p in recipe.exp(kind).iterdir())
    out = pack_model(recipe.recipe_dir, recipe.exp(kind), tmp_path / f"{kind}.zip")
    assert sorted(p.name for p in recipe.exp(kind).iterdir()) == before   # exp dir untouched
    assert out == tmp_path / f"{kind}.zip" and zipfile.is_zipfile(out)
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        meta = yaml.safe_load(z.read("meta.yaml"))
    model_file = f"exp/asr_{kind}/{want['criterion']}.ave_2best.pth"  # pack resolves symlinks
    assert meta["yaml_files"] == {"asr_train_config": f"exp/asr_{kind}/config.yaml"}
    assert meta["files"] == {"asr_model_file": model_file}
    assert {"meta.yaml", f"exp/asr_{kind}/config.yaml", model_file} <= names
    conf = _config(recipe, kind)
    if want["token_type"] == "bpe":
        assert conf["bpemodel"] in names
    if want["normalize"] == "global_mvn":
        assert conf["normalize_conf"]["stats_file"] in names
    assert any(n.startswith(f"exp/asr_{kind}/images/") for n in names)

    # unpacked elsewhere, the zip alone builds the model (its yaml is rewritten to the new place)
    files = unpack(out, tmp_path / "unpacked")
    model, _ = ASRTask.build_model_from_file(files["asr_train_config"], files["asr_model_file"],
                                             "cpu")
    assert type(model.encoder).__name__ == want["encoder"]
