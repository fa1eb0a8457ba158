"""espnet_probe.layers: every hidden layer of a model, for our and ESPnet's stock encoders,
and a tiny model trained end to end through asr_train, saved by ESPnet and reloaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_probe.asr.register import register_encoders
from espnet_probe.asr.pretraining import espnet_config
from espnet_probe.layers import encoder_layers, extract_layers, layer_table, load_asr_model

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "asr"
PYTHON = sys.executable


def write_stats(path: Path, mean: float = 1.0, std: float = 2.0, count: int = 50) -> Path:
    np.savez(
        path,
        count=np.array(count),
        sum=np.full(240, mean * count),
        sum_square=np.full(240, (std**2 + mean**2) * count),
    )
    return path


def build_model(tmp_path: Path, config: str, *overrides: str):
    """An untrained ESPnet ASR model from one of our configs (tiny sizes via overrides)."""
    from espnet2.tasks.asr import ASRTask

    register_encoders()
    stats = write_stats(tmp_path / "stats.npz")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\n<space>\na\nb\n<sos/eos>\n", encoding="utf-8")
    args = ASRTask.get_parser().parse_args(
        ["--config", str(espnet_config(CONF / config, tmp_path / "asr.yaml")), "--token_list", str(tokens),
         "--normalize_conf", f"stats_file={stats}", "--output_dir", str(tmp_path), *overrides]
    )
    torch.manual_seed(0)
    return ASRTask.build_model(args).eval()


def feats_batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 1.0 + 2.0 * torch.randn(len(lengths), max(lengths), 240, generator=g)
    return x, torch.tensor(lengths)


def espnet_encode(model, x, lens):
    with torch.no_grad():
        out, olens = model.encode(x.clone(), lens)  # clone: global_mvn works in place
    return out, olens


def test_vgg_blstm_model_layers_start_with_normalised_input(tmp_path):
    model = build_model(
        tmp_path, "vgg_blstm_small.yaml",
        "--encoder_conf", "conv_channels=[4,4,4,4]", "--encoder_conf", "hidden_size=8",
        "--encoder_conf", "projection_size=8",
    )
    x, lens = feats_batch([30, 17])
    before = x.clone()
    layers = extract_layers(model, x, lens)
    assert torch.equal(x, before), "extract_layers must not modify the caller's features"
    records = [s.layer for s in layers]
    assert [(r.index, r.name) for r in records][:2] == [(0, "input"), (1, "cnn1")]
    assert [r.index for r in records] == list(range(len(layers)))
    assert all(s.layer.dim == s.hidden.size(-1) for s in layers)
    assert records[0].frame_rate == 1 and layers[0].hidden.shape == (2, 30, 240)
    assert (records[0].period, records[0].offset) == (0.01, -0.005)  # centred 10 ms features
    # global_mvn with mean 1, std 2
    assert torch.allclose(layers[0].hidden[0], (x[0] - 1.0) / 2.0, atol=1e-5)
    assert not layers[0].hidden[1, 17:].any()
    assert [r.frame_rate for r in records[1:]] == [1, 1, 2, 2, 2, 4] + [4] * 5
    assert [r.period for r in records[1:]] == [0.01 * r.frame_rate for r in records[1:]]
    out, olens = espnet_encode(model, x, lens)
    assert torch.equal(layers[-1].lengths, olens)
    assert torch.allclose(layers[-1].hidden, out, atol=1e-6)
    assert "blstm5" in layer_table(layers)


def test_blstm_model_layers(tmp_path):
    # the paper's schedule (blstm.yaml, downsampling after layers 2, 3, 4), tiny sizes
    model = build_model(
        tmp_path, "blstm.yaml", "--encoder_conf", "hidden_size=8",
        "--encoder_conf", "projection_size=8",
    )
    x, lens = feats_batch([33, 20])
    layers = extract_layers(model, x, lens)
    assert [(s.layer.name, s.layer.frame_rate, s.hidden.size(1)) for s in layers] == [
        ("input", 1, 33), ("blstm1", 1, 33), ("blstm2", 1, 33), ("blstm3", 2, 17),
        ("blstm4", 4, 9), ("blstm5", 8, 5),
    ]
    assert layers[5].lengths.tolist() == [5, 3]


def test_stock_conformer_layers(tmp_path):
    model = build_model(
        tmp_path, "conformer_small.yaml",
        "--encoder_conf", "output_size=16", "--encoder_conf", "attention_heads=2",
        "--encoder_conf", "linear_units=32", "--encoder_conf", "num_blocks=3",
    )
    x, lens = feats_batch([50, 31])
    layers = extract_layers(model, x, lens)
    assert [s.layer.name for s in layers] == ["input", "subsample", "block1", "block2", "block3", "output"]
    assert [s.layer.frame_rate for s in layers] == [1, 4, 4, 4, 4, 4]
    out, olens = espnet_encode(model, x, lens)
    for layer in layers[1:]:
        assert layer.hidden.shape == (2, out.size(1), 16)
        assert torch.equal(layer.lengths, olens)
        assert not layer.hidden[1, int(olens[1]):].any()
    n = int(olens[1])
    assert torch.allclose(layers[-1].hidden[0], out[0], atol=1e-5)
    assert torch.allclose(layers[-1].hidden[1, :n], out[1, :n], atol=1e-5)
    # "output" is the final LayerNorm of block3
    assert torch.allclose(model.encoder.after_norm(layers[-2].hidden[0]), out[0], atol=1e-5)


def test_stock_transformer_and_rnn_encoders():
    from espnet2.asr.encoder.rnn_encoder import RNNEncoder
    from espnet2.asr.encoder.transformer_encoder import TransformerEncoder

    torch.manual_seed(0)
    x, lens = feats_batch([40, 25])
    cases = [
        (TransformerEncoder(240, output_size=16, attention_heads=2, linear_units=32,
                            num_blocks=2, input_layer="linear"),
         ["subsample", "block1", "block2", "output"], [1, 1, 1, 1]),
        (RNNEncoder(240, num_layers=3, hidden_size=8, output_size=6, subsample=(1, 2, 2)),
         ["blstm1", "blstm2", "blstm3"], [1, 2, 4]),
        (RNNEncoder(240, num_layers=2, hidden_size=8, output_size=6, use_projection=False),
         ["blstm1", "blstm2", "output"], [1, 1, 1]),
    ]
    for enc, names, rates in cases:
        enc.eval()
        with torch.no_grad():
            layers = encoder_layers(enc, x, lens)
            out, olens, _ = enc(x, lens)
        assert [name for name, *_ in layers] == names
        assert [rate for *_, rate, _ in layers] == rates
        _, last, last_lengths, *_ = layers[-1]
        assert last_lengths.tolist() == olens.tolist()
        for b, n in enumerate(olens.tolist()):
            assert torch.allclose(last[b, :n], out[b, :n], atol=1e-5), type(enc).__name__


def test_unsupported_encoder_is_named():
    class Odd(torch.nn.Module):
        pass

    with pytest.raises(NotImplementedError, match="Odd"):
        encoder_layers(Odd(), torch.zeros(1, 4, 240), torch.tensor([4]))


def test_extract_layers_restores_mode_and_checks_lengths(tmp_path):
    model = build_model(
        tmp_path, "blstm_small.yaml", "--encoder_conf", "hidden_size=4",
        "--encoder_conf", "projection_size=4",
    )
    model.train()
    x, lens = feats_batch([12, 9])
    a = extract_layers(model, x, lens)
    b = extract_layers(model, x, lens)
    assert model.training  # restored
    assert all(torch.equal(la.hidden, lb.hidden) for la, lb in zip(a, b))  # dropout was off
    with pytest.raises(ValueError, match="lengths"):
        extract_layers(model, x, torch.tensor([13, 9]))


def test_load_asr_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config"):
        load_asr_model(tmp_path / "none.yaml", tmp_path / "none.pth")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("normalize: global_mvn\nnormalize_conf:\n  stats_file: gone.npz\n")
    ckpt = tmp_path / "m.pth"
    torch.save({}, ckpt)
    with pytest.raises(ValueError, match="empty state dict"):
        load_asr_model(cfg, ckpt)
    torch.save({"encoder.w": torch.zeros(1)}, ckpt)
    with pytest.raises(FileNotFoundError, match="gone.npz"):
        load_asr_model(cfg, ckpt)
    torch.save([1, 2], ckpt)
    with pytest.raises(ValueError, match="not a state dict"):
        load_asr_model(cfg, ckpt)


# ---------------------------------------------------------------------------------------------
# Integration: tiny synthetic kaldi-ark corpus -> collect stats (CLI) -> train 1 epoch -> reload


def make_tiny_corpus(root: Path) -> dict:
    import kaldiio

    rng = np.random.default_rng(0)
    chars = "abcd"
    out = {}
    for split, n in (("train", 6), ("valid", 3)):
        d = root / split
        d.mkdir(parents=True)
        texts, shapes = {}, {}
        with kaldiio.WriteHelper(f"ark,scp:{d}/feats.ark,{d}/feats.scp") as w:
            for i in range(n):
                utt = f"{split}{i:02d}"
                frames = int(rng.integers(40, 90))
                w[utt] = (3.0 + 2.0 * rng.standard_normal((frames, 240))).astype(np.float32)
                texts[utt] = " ".join("".join(rng.choice(list(chars), 2)) for _ in range(2))
                shapes[utt] = frames
        (d / "text").write_text("".join(f"{u} {t}\n" for u, t in sorted(texts.items())))
        (d / "feats_shape").write_text("".join(f"{u} {f},240\n" for u, f in sorted(shapes.items())))
        out[split] = d
    tokens = root / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", "<space>", *chars, "<sos/eos>"]) + "\n")
    out["tokens"] = tokens
    return out


def data_args(c: dict) -> list:
    args = []
    for split in ("train", "valid"):
        d = c[split]
        args += [
            f"--{split}_data_path_and_name_and_type", f"{d}/feats.scp,speech,kaldi_ark",
            f"--{split}_data_path_and_name_and_type", f"{d}/text,text,text",
            f"--{split}_shape_file", f"{d}/feats_shape",
        ]
    return args


TINY_VGG = ["--encoder_conf", "conv_channels=[4,4,4,4]", "--encoder_conf", "hidden_size=8",
            "--encoder_conf", "projection_size=8"]


@pytest.mark.integration
def test_train_one_epoch_save_and_reload(tmp_path):
    from espnet2.tasks.asr import ASRTask

    from espnet_probe.bin import asr_train

    c = make_tiny_corpus(tmp_path / "data")
    common = ["--config", str(espnet_config(CONF / "vgg_blstm_small.yaml", tmp_path / "asr.yaml")),
              "--token_list", str(c["tokens"]),
              "--token_type", "char", "--ngpu", "0", *TINY_VGG, *data_args(c)]
    stats_dir = tmp_path / "exp" / "asr_stats"
    # ESPnet's collect-stats pass, through the real command line (registration at import)
    proc = subprocess.run(
        [PYTHON, "-m", "espnet_probe.bin.asr_train", *common, "--collect_stats", "true",
         "--normalize", "none", "--output_dir", str(stats_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = stats_dir / "train" / "feats_stats.npz"
    assert stats.is_file()

    exp = tmp_path / "exp" / "asr"
    asr_train.main(
        [*common, "--normalize_conf", f"stats_file={stats}", "--max_epoch", "1",
         "--output_dir", str(exp)]
    )
    for name in ("config.yaml", "1epoch.pth", "valid.loss.best.pth", "checkpoint.pth"):
        assert (exp / name).exists(), name

    model = load_asr_model(exp / "config.yaml", exp / "valid.loss.best.pth")
    assert type(model.encoder).__name__ == "VGGBLSTMEncoder" and not model.training
    saved = torch.load(exp / "valid.loss.best.pth", map_location="cpu")
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name

    import kaldiio

    feats = kaldiio.load_scp(str(c["valid"] / "feats.scp"))
    arrays = [torch.from_numpy(np.array(feats[k])) for k in sorted(feats)]
    lens = torch.tensor([len(a) for a in arrays])
    x = torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True)
    layers = extract_layers(model, x, lens)
    assert [s.layer.name for s in layers] == ["input", "cnn1", "cnn2", "pool1", "cnn3", "cnn4",
                                              "pool2"] + [f"blstm{k}" for k in range(1, 6)]
    # input layer = features normalised with the collected stats
    with np.load(stats) as st:
        mean = st["sum"] / st["count"]
        std = np.sqrt(st["sum_square"] / st["count"] - mean**2)
    ref = (x[0, : lens[0]].double() - torch.from_numpy(mean)) / torch.from_numpy(std)
    assert torch.allclose(layers[0].hidden[0, : lens[0]].double(), ref, atol=1e-4)

    # ESPnet's own loader, the trainer's checkpoint and a second load: identical outputs
    register_encoders()
    espnet_model, _ = ASRTask.build_model_from_file(
        exp / "config.yaml", exp / "valid.loss.best.pth", "cpu"
    )
    out, olens = espnet_encode(espnet_model.eval(), x, lens)
    assert torch.equal(layers[-1].lengths, olens)
    assert torch.equal(layers[-1].hidden, out)
    again = extract_layers(load_asr_model(exp / "config.yaml", exp / "checkpoint.pth"), x, lens)
    assert all(torch.equal(a.hidden, b.hidden) for a, b in zip(layers, again))

    # ESPnet's own CTC decoding (espnet2.bin.asr_inference) runs our models once registered
    from espnet2.bin import asr_inference

    decode = tmp_path / "exp" / "decode"
    asr_inference.main(cmd=[
        "--asr_train_config", str(exp / "config.yaml"), "--asr_model_file",
         str(exp / "1epoch.pth"), "--data_path_and_name_and_type",
         f"{c['valid']}/feats.scp,speech,kaldi_ark", "--output_dir", str(decode),
         "--ctc_weight", "1.0", "--lm_weight", "0.0", "--beam_size", "2", "--ngpu", "0"])
    hyps = (decode / "1best_recog" / "text").read_text().splitlines()
    assert sorted(h.split(" ", 1)[0] for h in hyps) == sorted(feats)

    # the stats file may move after training: the checkpoint carries mean and std
    stats.rename(stats.with_suffix(".moved"))
    moved = extract_layers(load_asr_model(exp / "config.yaml", exp / "1epoch.pth"), x, lens)
    assert all(torch.equal(a.hidden, b.hidden) for a, b in zip(layers, moved))

    # a checkpoint of another architecture is refused, not half-loaded
    wrong = {k: v for k, v in saved.items() if not k.startswith("encoder.blstm.rnns.4")}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not match"):
        load_asr_model(exp / "config.yaml", tmp_path / "wrong.pth")
