"""The layer map's matrix: every encoder family ESPnet 202511's ASRTask offers, built tiny by
ESPnet itself, lists layers whose last one is the encoder's output (frames, values and time),
and one probe epoch trains on them and decodes; a family the map refuses says why in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from espnet_probe.families import FAMILIES, REFUSED, UnsupportedFamily, family_named
from espnet_probe.layers import extract_layers
from espnet_probe.probe.model import PROBED_PARTS, ProbeModel, probed_layers, reinitialise_encoder
from test_brought import stock_model
from test_layers import TINY_VGG, build_model, feats_batch

TRANSFORMER = {"output_size": 16, "attention_heads": 2, "linear_units": 16, "num_blocks": 2,
               "input_layer": "conv2d"}
STREAMING = {**TRANSFORMER, "block_size": 8, "hop_size": 4, "look_ahead": 2}

# family -> (ESPnet encoder choice, encoder_conf, layer names); each builds a waveform model
# with ESPnet's default STFT frontend (hop 128) and utterance_mvn, as egs2 asr.sh does
STOCK = {
    "conformer": ("conformer", TRANSFORMER, ["input", "subsample", "block1", "block2", "output"]),
    "interctc_conformer": ("conformer", {**TRANSFORMER, "interctc_layer_idx": [1]},
                           ["input", "subsample", "block1", "block2", "output"]),
    "transformer": ("transformer", TRANSFORMER, ["input", "subsample", "block1", "block2", "output"]),
    "branchformer": ("branchformer", {"output_size": 16, "attention_heads": 2, "cgmlp_linear_units": 16,
                                      "num_blocks": 2, "input_layer": "conv2d"},
                     ["input", "subsample", "block1", "block2", "output"]),
    "e_branchformer": ("e_branchformer", {**TRANSFORMER, "cgmlp_linear_units": 16},
                       ["input", "subsample", "block1", "block2", "output"]),
    "multiconv_conformer": ("multiconv_conformer",
                            {**TRANSFORMER, "cgmlp_linear_units": 16, "multicgmlp_kernel_sizes": "7,15"},
                            ["input", "subsample", "block1", "block2", "output"]),
    "contextual_block_conformer": ("contextual_block_conformer", STREAMING,
                                   ["input", "subsample", "block1", "block2", "output"]),
    "contextual_block_transformer": ("contextual_block_transformer", STREAMING,
                                     ["input", "subsample", "block1", "block2", "output"]),
    "rnn": ("rnn", {"rnn_type": "lstm", "num_layers": 2, "hidden_size": 8, "output_size": 8,
                    "subsample": [1, 2]}, ["input", "blstm1", "blstm2"]),
    "vgg_rnn": ("vgg_rnn", {"rnn_type": "lstm", "num_layers": 2, "hidden_size": 8, "output_size": 8},
                ["input", "vgg", "blstm1", "blstm2"]),
}
# ours, from the recipe's configs (features in, global_mvn)
OURS = {
    "vgg_blstm": ("vgg_blstm_small.yaml", TINY_VGG),
    "blstm": ("blstm.yaml", ["--encoder_conf", "hidden_size=8", "--encoder_conf", "projection_size=8"]),
}
# frontends other than ESPnet's default STFT: the s3prl one is tested below, on two upstreams
ELSEWHERE = {"whisper": "test_whisper.py (ESPnet's Whisper encoder needs tiny.en's weights)",
             "torchaudiohubert": "test_torchaudio_hubert_lists_its_layers_and_trains_a_probe, below"}


def test_every_encoder_choice_of_asrtask_has_an_entry_or_a_refusal():
    from espnet2.tasks.asr import encoder_choices

    mapped = {f.name for f in FAMILIES} | {r.name for r in REFUSED}
    assert set(encoder_choices.classes) <= mapped, set(encoder_choices.classes) - mapped
    # and every mapped family is tested here or named where it is
    assert {f.name for f in FAMILIES} <= set(STOCK) | set(OURS) | set(ELSEWHERE)


def test_every_refused_family_says_why_in_one_line(tmp_path):
    from espnet2.tasks.asr import encoder_choices

    from espnet_probe.families import family_of

    for refused in REFUSED:
        cls = encoder_choices.classes[refused.name]
        fake = cls.__new__(cls)  # building one needs what is missing; its class is enough
        with pytest.raises(UnsupportedFamily) as e:
            family_of(fake)
        message = str(e.value)
        assert "\n" not in message and refused.name in message and refused.reason in message


def test_an_encoder_without_an_entry_is_refused_with_the_supported_list():
    from espnet_probe.families import family_of

    class MyEncoder(torch.nn.Module):
        pass

    with pytest.raises(UnsupportedFamily, match=r"MyEncoder: no entry in the layer map.*conformer"):
        family_of(MyEncoder())


def check_random_control(model, speech, lengths, names):
    """The family's random-encoder control (stage 7's --asr_init random), on ``model`` in place:
    every parameter the probed layers come from is drawn afresh (none keeps a trained value),
    nothing outside them changes, and the layers and their frames stay the same."""
    torch.manual_seed(1)
    with torch.no_grad():  # "trained": every parameter moved off its initial value
        for param in model.parameters():
            param.add_(torch.rand_like(param) + 0.5)
    before = extract_layers(model, speech, lengths)
    trained = {k: p.clone() for k, p in model.named_parameters()}
    reinitialise_encoder(model, seed=0)
    kept = {k for k, p in model.named_parameters() if torch.equal(p, trained[k])}
    probed = {k for k in trained if k.split(".")[0] in PROBED_PARTS}
    assert probed and not probed & kept, sorted(probed & kept)
    assert kept == set(trained) - probed
    after = extract_layers(model, speech, lengths)
    assert [s.layer.name for s in after] == names
    assert [a.lengths.tolist() for a in after] == [b.lengths.tolist() for b in before]


def check_probe_epoch(model, speech, lengths, names, feature_period=0.01):
    """A probe per layer: a few updates lower the loss, and decoding gives every layer's mel on
    the 10 ms target grid, zero beyond each utterance; then the random control of ``model``
    (in place)."""
    torch.manual_seed(0)
    probe = ProbeModel(model, probed_layers(model), hidden_size=8)
    assert [layer.name for layer in probe.layers] == names
    frames = probe.frame_lengths(lengths)
    mel = torch.randn(speech.size(0), int(frames.max()), 240)
    optimiser = torch.optim.Adam([p for p in probe.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    probe.train()
    for _ in range(4):
        loss, _, _ = probe(speech=speech, speech_lengths=lengths, mel=mel, mel_lengths=frames)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses
    probe.eval()
    preds = probe.predict(speech, lengths)
    assert set(preds) == set(names)
    for name, pred in preds.items():
        assert pred.shape == (speech.size(0), int(frames.max()), 80), name
        assert torch.isfinite(pred).all() and not pred[1, int(frames[1]):].any(), name
    check_random_control(model, speech, lengths, names)


def check_last_layer_is_the_output(model, speech, lengths):
    layers = extract_layers(model, speech, lengths)
    last = layers[-1]
    for b in range(speech.size(0)):  # each utterance alone, as Speech2Text encodes it
        n = int(lengths[b])
        with torch.no_grad():
            out, olens = model.encode(speech[b:b + 1, :n].clone(), lengths[b:b + 1])
        if isinstance(out, tuple):  # intermediate CTC: (output, intermediate outputs)
            out = out[0]
        alone = extract_layers(model, speech[b:b + 1, :n], lengths[b:b + 1])[-1]
        assert alone.lengths.tolist() == olens.tolist()
        assert torch.allclose(alone.hidden, out, atol=1e-5)
        # the last frame's span ends within a period past the utterance's end (ceil-mode pooling
        # covers a partial last step) and less than two before it (valid convolutions drop the
        # edge frames that would need input past the end)
        seconds = n / 16000 if speech.dim() == 2 else n * 0.01
        end = last.layer.offset + int(olens[0]) * last.layer.period
        assert -last.layer.period <= seconds - end < 2 * last.layer.period, (end, seconds)
    return layers


@pytest.mark.parametrize("family", sorted(STOCK))
def test_stock_family_lists_its_layers_and_trains_a_probe(tmp_path, family):
    encoder, conf, names = STOCK[family]
    model = stock_model(tmp_path, encoder, conf)
    assert family_named(encoder) is not None
    wav = torch.randn(2, 16000) * 0.1
    lens = torch.tensor([16000, 11000])
    layers = check_last_layer_is_the_output(model, wav, lens)
    assert [s.layer.name for s in layers] == names
    check_probe_epoch(model, wav, lens, names)


@pytest.mark.parametrize("family", sorted(OURS))
def test_our_family_lists_its_layers_and_trains_a_probe(tmp_path, family):
    config, overrides = OURS[family]
    model = build_model(tmp_path, config, *overrides)
    x, lens = feats_batch([120, 90])
    layers = check_last_layer_is_the_output(model, x, lens)
    check_probe_epoch(model, x, lens, [s.layer.name for s in layers])


def test_contextual_block_layers_are_stitched_onto_the_timeline(tmp_path):
    """Each block layer has the encoder output's frames; the last one is the output before the
    final LayerNorm; an utterance shorter than a block runs as one plain block."""
    model = stock_model(tmp_path, "contextual_block_conformer", STREAMING)
    for n in (16000, 3000):  # 30 frames in 7 blocks; 5 frames, fewer than the block size of 8
        wav = torch.randn(1, n) * 0.1
        layers = extract_layers(model, wav, torch.tensor([n]))
        with torch.no_grad():
            out, olens = model.encode(wav.clone(), torch.tensor([n]))
        assert [s.hidden.size(1) for s in layers[1:]] == [int(olens[0])] * 4
        assert torch.allclose(model.encoder.after_norm(layers[-2].hidden), out, atol=1e-5)
    # in a batch, each utterance is encoded alone: the same layers as when it is alone
    wav = torch.randn(2, 16000) * 0.1
    batch = extract_layers(model, wav, torch.tensor([16000, 11000]))
    alone = extract_layers(model, wav[1:, :11000], torch.tensor([11000]))
    for a, b in zip(batch[1:], alone[1:]):
        n = int(b.lengths[0])
        assert int(a.lengths[1]) == n
        # input differs only as ESPnet's batched STFT does (reflect padding at the batch's end)
        assert a.hidden[1, n:].abs().sum() == 0


def tiny_torchaudio_hubert(tmp_path: Path, layer_norm_first: bool):
    """ESPnet's torchaudiohubert encoder, a random tiny HuBERT (320-sample stride), no frontend."""
    from espnet2.tasks.asr import ASRTask
    import yaml

    conv = [[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2
    conf = {"frontend": None, "input_size": 1, "normalize": None, "encoder": "torchaudiohubert",
            "encoder_conf": {"extractor_conv_layer_config": conv, "encoder_embed_dim": 16,
                             "encoder_pos_conv_kernel": 16, "encoder_pos_conv_groups": 2,
                             "encoder_num_layers": 2, "encoder_num_heads": 2,
                             "encoder_ff_interm_features": 32, "encoder_layer_drop": 0.0,
                             "final_dim": 8, "num_classes": 10, "finetuning": True,
                             "encoder_layer_norm_first": layer_norm_first},
            "decoder": None, "model_conf": {"ctc_weight": 1.0},
            "token_list": ["<blank>", "<unk>", "a", "b", "<sos/eos>"]}
    path = tmp_path / "hubert.yaml"
    path.write_text(yaml.safe_dump(conf))
    args = ASRTask.get_parser().parse_args(["--config", str(path), "--output_dir", str(tmp_path)])
    torch.manual_seed(0)
    return ASRTask.build_model(args).eval()


@pytest.mark.parametrize("layer_norm_first,final_norm", [(False, False), (True, True)],
                         ids=["base_conf", "large_conf"])
def test_torchaudio_hubert_lists_its_layers_and_trains_a_probe(tmp_path, layer_norm_first, final_norm):
    """ESPnet's ``encoder_layer_norm_first`` reaches torchaudio's transformer inverted: with
    True the transformer's LayerNorm comes after its last block ("output": that block
    normalised); with False (HuBERT Base) before its first."""
    from espnet_probe.asr.model_input import model_input

    model = tiny_torchaudio_hubert(tmp_path, layer_norm_first)
    transformer = model.encoder.hubert_pretrain_model.wav2vec2.encoder.transformer
    assert transformer.layer_norm_first != final_norm
    spec = model_input(model)
    assert spec.kind == "wave" and spec.period == pytest.approx(1 / 16000)
    wav = torch.randn(2, 16000) * 0.1
    lens = torch.tensor([16000, 11000])
    layers = check_last_layer_is_the_output(model, wav, lens)
    names = ["cnn", "projection", "block1", "block2"] + (["output"] if final_norm else [])
    assert [s.layer.name for s in layers] == names
    # 20 ms frames: frame j reads samples 320 j .. 320 j + 399 (its convolutions' receptive
    # field), so it spans the 320 samples centred there: from sample 320 j + 40
    first = layers[0].layer
    assert first.frame_rate == 320 and first.period == pytest.approx(0.02)
    assert first.offset == pytest.approx((40 - 0.5) / 16000)
    assert layers[0].lengths.tolist() == [(n - 400) // 320 + 1 for n in (16000, 11000)]
    check_probe_epoch(model, wav, lens, names)


@pytest.mark.parametrize("upstream", ["hubert_local", "wav2vec2_local"])
def test_s3prl_frontend_model_lists_upstream_layers_then_the_encoders(tmp_path, upstream):
    """A conformer on ESPnet's s3prl frontend (a random tiny HuBERT / wav2vec 2.0 written as
    s3prl's local checkpoint): every upstream layer at 20 ms, the frontend's weighted sum (what
    the encoder reads, normalised), then the conformer's layers at 80 ms; a probe trains."""
    from ssl_upstream import tiny_asr_config, write_tiny_hubert, write_tiny_wav2vec2

    from espnet_probe.asr.model_input import model_input

    write = write_tiny_hubert if upstream == "hubert_local" else write_tiny_wav2vec2
    conf = tiny_asr_config(write(tmp_path / "upstream.pt"), upstream)
    model = stock_model(tmp_path, "conformer", conf["encoder_conf"], frontend="s3prl",
                        frontend_conf=conf["frontend_conf"])
    assert model_input(model).period == pytest.approx(1 / 16000)
    wav = torch.randn(2, 16000) * 0.1
    lens = torch.tensor([16000, 11000])
    layers = check_last_layer_is_the_output(model, wav, lens)
    names = ["upstream0", "upstream1", "upstream2", "weighted_sum", "subsample", "block1", "output"]
    assert [s.layer.name for s in layers] == names
    up, weighted, sub = layers[0].layer, layers[3].layer, layers[4].layer
    # upstream frame j reads samples 320 j .. 320 j + 399: it spans 320 samples from 320 j + 40
    assert up.frame_rate == 320 and up.offset == pytest.approx((40 - 0.5) / 16000)
    assert (weighted.frame_rate, weighted.offset) == (up.frame_rate, up.offset)
    # conv2d on 20 ms frames: 4x, output frame j centred on input frame 4 j + 3
    assert sub.frame_rate == 4 * 320 and sub.period == pytest.approx(0.08)
    assert sub.offset == pytest.approx(up.offset + 0.02 * (3.5 - 2))
    with torch.no_grad():
        feats, _ = model.frontend(wav[:1].clone(), lens[:1])
        feats, _ = model.normalize(feats, torch.tensor([feats.size(1)]))
    assert torch.allclose(layers[3].hidden[:1, : feats.size(1)], feats, atol=1e-5)
    check_probe_epoch(model, wav, lens, names)


def test_bringing_a_refused_or_unknown_family_fails_in_one_line_before_any_stage(tmp_path):
    from test_brought import egs2_exp

    from espnet_probe.asr.brought import BringError, bring
    from espnet_probe.data.model_inputs import input_kind

    exp = egs2_exp(tmp_path / "asr1")
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    for encoder, frontend, message in (
            ("hubert", None, "encoder hubert is not probed: needs fairseq"),
            ("my_encoder", "default", "encoder 'my_encoder' has no entry in the layer map"),
            ("conformer", "fused", "frontend 'fused' is not supported")):
        (exp / "config.yaml").write_text(yaml.safe_dump({**conf, "encoder": encoder, "frontend": frontend}))
        with pytest.raises(BringError, match=message) as e:
            bring(exp, tmp_path / "exp" / f"asr_{encoder}_brought")
        assert "\n" not in str(e.value)
        assert not (tmp_path / "exp" / f"asr_{encoder}_brought").exists()
    # an SSL encoder that reads the waveform itself (input_size 1, no frontend) is given it
    assert input_kind({"encoder": "torchaudiohubert", "input_size": 1}) == "wave"


def test_the_readme_table_names_every_family_of_the_map():
    from conftest import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| encoder (`encoder:`) |"):]
    table = table[: table.index("\n\n")]
    for name in [f.name for f in FAMILIES] + [r.name for r in REFUSED]:
        assert re.search(rf"\b{name}\b", table), f"README's encoder table lacks {name}"
