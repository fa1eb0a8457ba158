"""The layer-exposing encoders: names, shapes, frame rates, padding, registration, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from espnet_probe.asr.blstm import BLSTMEncoder
from espnet_probe.asr.register import register_encoders
from espnet_probe.asr.vgg_blstm import VGGBLSTMEncoder
from espnet_probe.asr.blstm import BiLSTM, reverse_within_lengths

CONF = Path(__file__).resolve().parents[1] / "conf" / "asr"


def tiny_vgg(**kw):
    conf = dict(conv_channels=[4, 4, 6, 6], num_layers=5, hidden_size=8, projection_size=0)
    conf.update(kw)
    return VGGBLSTMEncoder(240, **conf).eval()


def tiny_blstm(**kw):
    conf = dict(num_layers=5, hidden_size=8, projection_size=6)
    conf.update(kw)
    return BLSTMEncoder(240, **conf).eval()


def batch(lengths, dim=240, seed=0, junk=100.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), dim, generator=g)
    lengths = torch.tensor(lengths)
    # padding filled with junk: a correct encoder must never look at it
    pad = torch.arange(x.size(1))[None, :] >= lengths[:, None]
    x[pad] = junk
    return x, lengths


def ceil_div(n, f):
    return -(-n // f)


def test_vgg_blstm_layers_names_shapes_rates():
    enc = tiny_vgg()
    x, lens = batch([37, 20, 5])
    with torch.no_grad():
        layers = enc.forward_layers(x, lens)
    names = [name for name, *_ in layers]
    assert names == ["cnn1", "cnn2", "pool1", "cnn3", "cnn4", "pool2"] + [
        f"blstm{k}" for k in range(1, 6)
    ]
    expect = {  # name: (rate, dim)
        "cnn1": (1, 4 * 80), "cnn2": (1, 4 * 80), "pool1": (2, 4 * 40),
        "cnn3": (2, 6 * 40), "cnn4": (2, 6 * 40), "pool2": (4, 6 * 20),
    }
    expect.update({f"blstm{k}": (4, 16) for k in range(1, 6)})
    for name, hidden, lengths, rate, start in layers:
        assert (rate, start) == (expect[name][0], 0.0), name  # pools and convs keep the span start
        assert hidden.shape == (3, ceil_div(37, rate), expect[name][1]), name
        assert lengths.tolist() == [ceil_div(n, rate) for n in (37, 20, 5)], name
    assert enc.output_size() == 16


def test_vgg_cnn_layer_is_conv_relu_output_channel_major():
    enc = tiny_vgg()
    x, lens = batch([12])
    with torch.no_grad():
        _, cnn1, *_ = enc.forward_layers(x, lens)[0]
        image = x.reshape(1, 12, 3, 80).transpose(1, 2)  # static | delta | accel channels
        ref = torch.relu(enc.convs[0](image))  # (1, 4, 12, 80)
    assert torch.allclose(cnn1[0, :, 80:160], ref[0, 1], atol=1e-6)  # channel 1 = dims 80..159


def test_blstm_rates_1_1_2_4_8_and_downsampling_after_layers_2_3_4():
    enc = tiny_blstm()
    x, lens = batch([37, 20, 5])
    seen_inputs = []
    hooks = [
        rnn.register_forward_hook(lambda m, args, out: seen_inputs.append(args[0]))
        for rnn in enc.blstm.rnns
    ]
    with torch.no_grad():
        layers = enc.forward_layers(x, lens)
    for h in hooks:
        h.remove()
    names, hiddens, lengths, rates, starts = zip(*layers)
    assert list(names) == [f"blstm{k}" for k in range(1, 6)]
    assert list(rates) == [1, 1, 2, 4, 8] and set(starts) == {0.0}
    for hidden, lens_l, rate in zip(hiddens, lengths, rates):
        assert hidden.shape == (3, ceil_div(37, rate), 6)
        assert lens_l.tolist() == [ceil_div(n, rate) for n in (37, 20, 5)]
    # layer k+1 reads layer k's output: unchanged after layer 1, every 2nd frame after 2, 3, 4
    assert torch.equal(seen_inputs[1], hiddens[0])
    for k in (1, 2, 3):
        assert torch.equal(seen_inputs[k + 1], hiddens[k][:, ::2])
    out, olens, _ = enc(x, lens)
    assert torch.allclose(out, hiddens[-1], atol=1e-6)  # autograd on vs off: last-bit differences
    assert torch.equal(olens, lengths[-1])


@pytest.mark.parametrize("make", [tiny_vgg, tiny_blstm], ids=["vgg_blstm", "blstm"])
def test_padded_batch_gives_same_hidden_states_as_alone(make):
    torch.manual_seed(0)
    enc = make()
    lengths = [41, 23, 8, 30]
    x, lens = batch(lengths, junk=float("nan"))
    with torch.no_grad():
        together = enc.forward_layers(x, lens)
        for b, n in enumerate(lengths):
            alone = enc.forward_layers(x[b : b + 1, :n], lens[b : b + 1])
            for (name, ht, lens_t, *_), (_, ha, lens_a, *_) in zip(together, alone):
                m = int(lens_a[0])
                assert int(lens_t[b]) == m, name
                assert ha.size(1) == m, name
                assert torch.allclose(ht[b, :m], ha[0], atol=1e-5), (name, b)
                assert not ht[b, m:].any(), f"{name}: padding not zero"


def test_forward_output_is_last_layer_and_trimmed():
    enc = tiny_vgg()
    x, lens = batch([16, 9])
    x = torch.cat([x, torch.zeros(2, 7, 240)], dim=1)  # extra padding beyond max length
    with torch.no_grad():
        out, olens, states = enc(x, lens)
        _, last, *_ = enc.forward_layers(x, lens)[-1]
    assert states is None
    assert out.shape == (2, 4, 16) and olens.tolist() == [4, 3]
    assert torch.equal(out, last)


def test_bilstm_equals_torch_packed_bidirectional_lstm():
    torch.manual_seed(1)
    ours = BiLSTM(10, 7).eval()
    ref = torch.nn.LSTM(10, 7, batch_first=True, bidirectional=True).eval()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, f"{name}_l0").copy_(getattr(ours.fwd, f"{name}_l0"))
            getattr(ref, f"{name}_l0_reverse").copy_(getattr(ours.bwd, f"{name}_l0"))
        x, lens = batch([13, 6, 10], dim=10)
        mine = ours(x, lens)
        packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        theirs, _ = pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=13)
    assert torch.allclose(mine, theirs, atol=1e-6)


def test_reverse_within_lengths_is_its_own_inverse():
    x = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    lens = torch.tensor([5, 3])
    r = reverse_within_lengths(x, lens)
    assert r[:, :, 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    assert torch.equal(reverse_within_lengths(r, lens), x)


def test_training_step_backpropagates_to_every_parameter():
    enc = tiny_blstm(dropout=0.1).train()
    x, lens = batch([20, 11])
    out, olens, _ = enc(x, lens)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_bad_configuration_and_input_are_explained():
    with pytest.raises(ValueError, match="in_channels"):
        VGGBLSTMEncoder(241)
    with pytest.raises(ValueError, match="even"):
        VGGBLSTMEncoder(240, conv_channels=[4, 4, 4])
    with pytest.raises(ValueError, match="one factor per layer"):
        BLSTMEncoder(240, num_layers=5, subsample=[1, 2])
    enc = tiny_blstm()
    with pytest.raises(ValueError, match="input_size=240"):
        enc(torch.zeros(1, 5, 80), torch.tensor([5]))
    with pytest.raises(ValueError, match="lengths must lie"):
        enc(torch.zeros(1, 5, 240), torch.tensor([6]))


def test_register_is_idempotent_and_refuses_to_shadow():
    from espnet2.tasks.asr import ASRTask, encoder_choices

    register_encoders()
    table = register_encoders()
    assert table["vgg_blstm"] is VGGBLSTMEncoder and table["blstm"] is BLSTMEncoder
    args = ASRTask.get_parser().parse_args(
        ["--encoder", "vgg_blstm", "--output_dir", "x", "--token_list", "t"]
    )
    assert args.encoder == "vgg_blstm"
    saved = encoder_choices.classes["blstm"]
    encoder_choices.classes["blstm"] = torch.nn.Module
    try:
        with pytest.raises(RuntimeError, match="refusing"):
            register_encoders()
    finally:
        encoder_choices.classes["blstm"] = saved


@pytest.mark.parametrize(
    "name, encoder_class, rnn_input",
    [
        ("vgg_blstm_small", "VGGBLSTMEncoder", 32 * 20),
        ("blstm_small", "BLSTMEncoder", 240),
        ("conformer_small", "ConformerEncoder", None),
        ("vgg_blstm", "VGGBLSTMEncoder", 128 * 20),
        ("blstm", "BLSTMEncoder", 240),
    ],
)
def test_configs_parse_and_build_ctc_only_models(tmp_path, name, encoder_class, rnn_input):
    """Every conf/asr YAML (minus our pretraining key) is accepted by ESPnet's parser and
    builds a CTC-only model; its growth schedule, if any, is valid."""
    import yaml
    from espnet2.tasks.asr import ASRTask

    from espnet_probe.asr.pretraining import espnet_config, parse_schedule

    register_encoders()
    stats = tmp_path / "feats_stats.npz"
    np.savez(stats, count=np.array(10), sum=np.zeros(240), sum_square=np.full(240, 10.0))
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\n<space>\na\nb\n<sos/eos>\n", encoding="utf-8")
    args = ASRTask.get_parser().parse_args(
        ["--config", str(espnet_config(CONF / f"{name}.yaml", tmp_path / "asr.yaml")),
         "--token_list", str(tokens),
         "--normalize_conf", f"stats_file={stats}", "--output_dir", str(tmp_path / "exp")]
    )
    parse_schedule(yaml.safe_load((CONF / f"{name}.yaml").read_text()), name)
    assert args.input_size == 240 and args.model_conf["ctc_weight"] == 1.0
    assert args.decoder is None and args.normalize == "global_mvn"
    # the pure BLSTM's paper schedule (rate 8) is too slow for characters; small models use them
    assert args.token_type == ("char" if name.endswith("_small") else "bpe")
    if args.encoder_conf.get("hidden_size", 0) > 256:  # paper scale: check sizes, skip 100M params
        assert args.encoder_conf["hidden_size"] == 1024
        cls = register_encoders()[args.encoder]
        small = dict(args.encoder_conf, hidden_size=4, projection_size=4)
        enc = cls(input_size=240, **small)
        assert enc.blstm.rnns[0].fwd.input_size == rnn_input
        return
    model = ASRTask.build_model(args)
    assert type(model.encoder).__name__ == encoder_class
    assert model.frontend is None and model.decoder is None and model.ctc is not None
    if rnn_input is not None:
        assert model.encoder.blstm.rnns[0].fwd.input_size == rnn_input
