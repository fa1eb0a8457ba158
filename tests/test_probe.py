"""The probe: frame-wise Highway probes, their ESPnet task, training and decoding."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch

from conftest import LIBRISPEECH, need
from espnet_probe.asr.pretraining import espnet_config
from espnet_probe.audio.features import FbankConfig, LogMelExtractor
from espnet_probe.probe.summary import read_summary
from espnet_probe.probe.model import (
    FrameDealer,
    LayerProbe,
    ProbeModel,
    SampledFrames,
    masked_l1,
    probed_layers,
)
from test_layers import build_model

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.mark.parametrize("rate", [1, 2, 4, 8])
@pytest.mark.parametrize("num_frames", [37, 40, 64])
def test_downsampled_layer_is_upsampled_to_the_input_length(rate, num_frames):
    probe = LayerProbe(input_size=12, ratio=rate, hidden_size=16, n_mels=80)
    t_layer = -(-num_frames // rate)  # ceil: frame skipping / ceil-mode pooling
    out = probe(torch.randn(2, t_layer, 12), num_frames)
    assert out.shape == (2, num_frames, 80)
    # a conv front end that drops edge frames gives fewer: the last frame is repeated
    short = probe(torch.randn(2, max(1, t_layer - 2), 12), num_frames)
    assert short.shape == (2, num_frames, 80)
    assert torch.equal(short[:, -1], short[:, -2])


def test_probe_sees_no_neighbouring_frame():
    torch.manual_seed(0)
    probe = LayerProbe(input_size=10, ratio=1, hidden_size=32).eval()
    x = torch.randn(1, 20, 10)
    y = probe(x, 20)
    for t in range(19):
        changed = x.clone()
        changed[:, t + 1] += 5.0 * torch.randn(10)
        y2 = probe(changed, 20)
        assert torch.equal(y2[:, : t + 1], y[:, : t + 1]), f"frame {t} moved when frame {t + 1} changed"
        assert not torch.equal(y2[:, t + 1], y[:, t + 1])
    # an upsampled layer: output frame t depends only on hidden frame t // rate
    up = LayerProbe(input_size=10, ratio=4, hidden_size=32).eval()
    h = torch.randn(1, 5, 10)
    base = up(h, 20)
    h2 = h.clone()
    h2[:, 3] += 1.0
    moved = (up(h2, 20) - base).abs().sum(-1)[0] > 0
    assert moved.nonzero().flatten().tolist() == [12, 13, 14, 15]


def test_masked_l1_ignores_padding():
    pred = torch.zeros(2, 5, 3)
    target = torch.ones(2, 5, 3)
    target[1, 3:] = 100.0  # padding of the second utterance
    assert masked_l1(pred, target, torch.tensor([5, 3])).item() == pytest.approx(1.0)


def test_probe_model_freezes_asr_and_reports_every_layer(tmp_path):
    asr = build_model(tmp_path, "blstm_small.yaml", "--encoder_conf", "hidden_size=8",
                      "--encoder_conf", "projection_size=8")
    layers = probed_layers(asr)
    assert [layer.name for layer in layers] == ["input"] + [f"blstm{k}" for k in range(1, 6)]
    assert [layer.index for layer in layers] == list(range(6))
    assert [round(layer.period * 1000) for layer in layers] == [10, 10, 10, 20, 40, 40]
    assert all(layer.offset == pytest.approx(-0.005) for layer in layers)
    # asked in any order, layers come in encoder order, each probe sized from its record
    assert probed_layers(asr, ["blstm5", "input"]) == [layers[0], layers[5]]
    model = ProbeModel(asr, layers, hidden_size=16).train()
    assert model.layers == tuple(layers)
    assert [model.probes[layer.name].upsample.in_features for layer in layers] == [240] + [8] * 5
    assert not asr.training and all(not p.requires_grad for p in asr.parameters())
    x = 1.0 + 2.0 * torch.randn(2, 50, 240)
    lens = torch.tensor([50, 33])
    loss, stats, weight = model(speech=x, speech_lengths=lens)
    assert set(stats) == {"loss"} | {f"l1_{layer.name}" for layer in layers}
    assert loss.item() == pytest.approx(sum(stats[f"l1_{layer.name}"].item() for layer in layers), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in asr.parameters())
    assert all(p.grad is not None for p in model.probes.parameters())
    preds = model.predict(x, lens)
    assert all(p.shape == (2, 50, 80) and p[1, 33:].abs().sum() == 0 for p in preds.values())
    # frame sampling: training takes the loss over 30 random valid frames, validation all
    sampled = ProbeModel(asr, layers, hidden_size=16, sample_frames=30)
    sampled.load_state_dict(model.state_dict())
    loss_s, stats_s, _ = sampled.train()(speech=x, speech_lengths=lens)
    assert set(stats_s) == set(stats) and torch.isfinite(loss_s)
    loss_s.backward()
    assert all(p.grad is None for p in asr.parameters())
    model.eval()
    sampled.eval()
    assert sampled(speech=x, speech_lengths=lens)[0].item() == pytest.approx(
        model(speech=x, speech_lengths=lens)[0].item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown layer"):
        probed_layers(asr, ["blstm9"])
    with pytest.raises(ValueError, match="needs a 'target'"):
        ProbeModel(asr, layers, target="clean")(speech=x, speech_lengths=lens)


def real_features(root: Path, n_utts: int = 24) -> Path:
    """(T, 240) features of real LibriSpeech utterances as a dump dir (feats.scp, feats_shape)."""
    flacs = sorted(need(LIBRISPEECH / "train-clean-5").rglob("*.flac"))[:n_utts]
    extractor = LogMelExtractor(FbankConfig())
    root.mkdir(parents=True)
    shapes = []
    with kaldiio.WriteHelper(f"ark,scp:{root}/feats.ark,{root}/feats.scp") as w:
        for flac in flacs:
            wav, sr = soundfile.read(flac, dtype="float32")
            assert sr == 16000
            feats, _ = extractor(wav[: 16000 * 4])  # 4 s is plenty per utterance
            w[flac.stem] = feats
            shapes.append(f"{flac.stem} {feats.shape[0]},{feats.shape[1]}")
    (root / "feats_shape").write_text("\n".join(shapes) + "\n")
    stats = np.concatenate(list(kaldiio.load_scp(str(root / "feats.scp")).values()))
    np.savez(root / "cmvn.npz", count=np.array(len(stats)), sum=stats.sum(0), sum_square=(stats**2).sum(0))
    return root


def test_the_layer_cache_gives_exactly_the_computed_layers_once_per_batch(tmp_path, monkeypatch):
    """The probe trainer's cache: a batch's layers are computed once, kept as computed (the
    probes see exactly what they would without it), within its memory; new weights clear it."""
    import espnet_probe.probe.model as probe_model

    asr = build_model(tmp_path, "blstm_small.yaml", "--encoder_conf", "hidden_size=8",
                      "--encoder_conf", "projection_size=8")
    model = ProbeModel(asr, probed_layers(asr), hidden_size=8)
    x = 1.0 + 2.0 * torch.randn(2, 50, 240)
    lens = torch.tensor([50, 33])
    exact = model.hidden_states(x, lens)
    calls = []
    compute = probe_model.extract_layers
    monkeypatch.setattr(probe_model, "extract_layers", lambda *a: calls.append(1) or compute(*a))
    model.cache_layers(2**20)
    first, again = model.hidden_states(x, lens), model.hidden_states(x, lens)
    assert len(calls) == 1
    assert model._cache_bytes == sum(s.hidden.numel() * 4 for s in exact.values())
    for name, e in exact.items():
        assert torch.equal(first[name].hidden, e.hidden) and torch.equal(again[name].hidden, e.hidden)
    model.hidden_states(x[:1], lens[:1])  # another batch: computed
    assert len(calls) == 2
    with torch.no_grad():
        next(asr.encoder.parameters()).add_(1.0)  # new weights: what was kept is stale
    model.hidden_states(x, lens)
    assert len(calls) == 3
    model.cache_layers(100)  # too little memory: nothing is kept, every pass computes
    model.hidden_states(x, lens), model.hidden_states(x, lens)
    assert len(calls) == 5 and model._cache_bytes == 0


def test_probe_task_options_are_probe_models_keyword_arguments(tmp_path):
    from espnet_probe.tasks.probe import ProbeTask

    parse = ProbeTask.get_parser().parse_args
    args = parse([])
    assert (args.target, args.n_mels, args.target_period) == ("heard", 80, 0.01)
    assert args.probe_conf == {"hidden_size": 256, "highway_layers": 4, "sample_frames": 0,
                               "mix_batches": 1}
    # each argument of ProbeModel is reachable: a task option of its own or a --probe_conf key
    given_by_task = {"asr_model", "layers", "target", "n_mels", "target_period"}
    assert given_by_task | set(args.probe_conf) == set(inspect.signature(ProbeModel).parameters)
    # --probe_conf adds to the defaults; an unknown key is refused before any ASR model loads
    args = parse(["--probe_conf", "hidden_size=16", "--probe_conf", "hiden_layers=2",
                  "--asr_train_config", str(tmp_path / "none.yaml"),
                  "--asr_model_file", str(tmp_path / "none.pth")])
    assert args.probe_conf["hidden_size"] == 16 and args.probe_conf["highway_layers"] == 4
    with pytest.raises(ValueError, match=r"--probe_conf: unknown option\(s\) \['hiden_layers'\]"):
        ProbeTask.build_model(args)


@pytest.mark.integration
def test_probe_task_trains_through_espnet_and_decodes(tmp_path):
    """ESPnet trainer end to end on real speech: the layer-0 probe beats the mean mel."""
    import yaml
    from espnet2.tasks.asr import ASRTask

    from espnet_probe.asr.register import register_encoders
    from espnet_probe.bin import probe_decode, probe_train

    feats = real_features(tmp_path / "dump")
    # an untrained tiny ASR model saved the way ESPnet saves one
    asr_dir = tmp_path / "asr"
    asr_dir.mkdir()
    register_encoders()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\n<space>\na\n<sos/eos>\n")
    args = ASRTask.get_parser().parse_args(
        ["--config", str(espnet_config(ROOT / "conf/asr/vgg_blstm_small.yaml", tmp_path / "asr.yaml")),
         "--token_list", str(tokens),
         "--normalize_conf", f"stats_file={feats / 'cmvn.npz'}", "--output_dir", str(asr_dir),
         "--encoder_conf", "conv_channels=[4,4,4,4]", "--encoder_conf", "hidden_size=8",
         "--encoder_conf", "projection_size=8"])
    asr = ASRTask.build_model(args)
    (asr_dir / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(asr.state_dict(), asr_dir / "model.pth")

    exp = tmp_path / "probe"
    model = ["--config", str(ROOT / "conf/probe/probe_small.yaml"), "--asr_train_config",
             str(asr_dir / "config.yaml"), "--asr_model_file", str(asr_dir / "model.pth")]
    # the data entries from the dump dirs: the features as speech; target: clean adds target.scp
    from espnet_probe.data.model_inputs import config_input_kind
    from espnet_probe.asr.model_input import model_input
    assert config_input_kind(asr_dir / "config.yaml") == model_input(asr).kind == "feats"
    assert probe_train.dump_dir_entries(model + ["--target", "clean", "--output_dir", str(exp)],
                                        feats, feats)[:6] == [
        "--train_data_path_and_name_and_type", f"{feats}/feats.scp,speech,kaldi_ark",
        "--train_data_path_and_name_and_type", f"{feats}/target.scp,target,kaldi_ark",
        "--train_shape_file", f"{feats}/feats_shape"]
    probe_train.main(model + [
        "--ngpu", "0", "--layers", "input", "blstm5", "--probe_conf", "hidden_size=64",
        "--train_dump_dir", str(feats), "--valid_dump_dir", str(feats),
        "--batch_bins", "400000", "--max_epoch", "12", "--patience", "2", "--optim_conf", "lr=0.005",
        "--output_dir", str(exp)])
    assert (exp / "valid.loss.best.pth").exists() and (exp / "config.yaml").exists()
    trained = yaml.safe_load((exp / "config.yaml").read_text())
    assert trained["train_data_path_and_name_and_type"] == [[f"{feats}/feats.scp", "speech", "kaldi_ark"]]
    # each layer's probe from its own best epoch, which ESPnet's trainer kept
    record = json.loads((exp / "probe_training.json").read_text())
    assert 3 <= record["epochs"] <= 12 and set(record["layers"]) == {"input", "blstm5"}  # patience
    layer_best = torch.load(exp / "valid.layer_best.pth")
    for layer, r in record["layers"].items():
        assert len(r["valid_curve"]) == record["epochs"]
        assert r["best_epoch"] == 1 + int(np.argmin(r["valid_curve"]))
        kept = torch.load(exp / f"{r['best_epoch']}epoch.pth")
        assert all(torch.equal(layer_best[k], kept[k]) for k in kept if k.startswith(f"probes.{layer}."))

    out = exp / "decode_dump"
    assert probe_decode.main(["--probe_exp", str(exp), "--feats_dir", str(feats)]) == 0
    summary = read_summary(out)
    assert summary.layer_names == ["input", "blstm5"] and summary.utterances == 24
    # a layer keeps its depth in the encoder (input, cnn1-2, pool1, cnn3-4, pool2, blstm1-5)
    assert [d.layer.index for d in summary.layers] == [0, 11] and summary.input == "feats"

    mels = {u: m[:, :80] for u, m in kaldiio.load_scp(str(feats / "feats.scp")).items()}
    pred = dict(kaldiio.load_scp(str(out / "input" / "mel.scp")))
    assert set(pred) == set(mels) and all(pred[u].shape == mels[u].shape for u in mels)
    allmel = np.concatenate(list(mels.values()))
    mean_l1 = float(np.abs(allmel - allmel.mean(0)).mean())
    l1_input = summary.layers[0].l1_heard
    assert l1_input == pytest.approx(
        float(np.mean(np.concatenate([np.abs(pred[u] - mels[u]) for u in mels]))), rel=1e-3)
    assert l1_input < 0.6 * mean_l1, (l1_input, mean_l1)

    # re-running decodes nothing; a NaN in the features is reported with its utterance
    mtime = (out / "input" / "mel.ark").stat().st_mtime
    assert probe_decode.main(["--probe_exp", str(exp), "--feats_dir", str(feats)]) == 0
    assert (out / "input" / "mel.ark").stat().st_mtime == mtime
    # the oracle "layer" is the heard log-mel itself
    assert probe_decode.main(["--oracle", "--out_root", str(tmp_path / "oracle"), "--feats_dir", str(feats)]) == 0
    oracle = dict(kaldiio.load_scp(str(tmp_path / "oracle" / "decode_dump" / "original" / "mel.scp")))
    assert all(np.array_equal(oracle[u], mels[u]) for u in mels)
    bad = tmp_path / "bad"
    bad.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{bad}/feats.ark,{bad}/feats.scp") as w:
        m = np.zeros((30, 240), dtype=np.float32)
        m[3, 7] = np.nan
        w["utt_nan"] = m
    assert probe_decode.main(["--probe_exp", str(exp), "--feats_dir", str(bad)]) == 1
    assert not (exp / "decode_bad").exists()


def test_random_encoder_control_changes_only_the_encoder(tmp_path):
    from espnet_probe.probe.model import reinitialise_encoder

    asr = build_model(tmp_path, "blstm_small.yaml", "--encoder_conf", "hidden_size=8",
                      "--encoder_conf", "projection_size=8")
    before = {k: v.clone() for k, v in asr.state_dict().items()}
    reinitialise_encoder(asr, seed=3)
    after = asr.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("encoder.") for k in changed)
    again = build_model(tmp_path, "blstm_small.yaml", "--encoder_conf", "hidden_size=8",
                        "--encoder_conf", "projection_size=8")
    reinitialise_encoder(again, seed=3)
    assert all(torch.equal(after[k], again.state_dict()[k]) for k in after)


def _smooth_signal(seconds: float, period: float, offset: float = 0.0, n_mels: int = 8,
                   centre: bool = True) -> torch.Tensor:
    """A known slowly varying (T, n_mels) signal sampled at frame centres every ``period``
    (frame j spans [offset + j period, offset + (j + 1) period))."""
    n = int(seconds / period)
    times = offset + (torch.arange(n, dtype=torch.float64) + (0.5 if centre else 0.0)) * period
    freqs = torch.linspace(0.4, 3.0, n_mels, dtype=torch.float64)
    phase = torch.linspace(0.0, 3.0, n_mels, dtype=torch.float64)
    return (torch.sin(2 * torch.pi * freqs * times[:, None] + phase)).float()


def _fit(probe: LayerProbe, hidden: torch.Tensor, target: torch.Tensor, steps: int = 400) -> float:
    torch.manual_seed(0)
    opt = torch.optim.Adam(probe.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = (probe(hidden[None], target.size(0))[0] - target).abs().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((probe(hidden[None], target.size(0))[0] - target).abs().mean())


@pytest.mark.parametrize("period,offset", [(0.032, 0.008), (0.040, 0.010)])
def test_time_mapping_reconstructs_a_known_10ms_signal(period, offset):
    """A layer at 32 ms (hop 128 x 4, conv2d's offset) or 40 ms (10 ms x 4, conv2d's offset)
    holds a known signal sampled at its own frame centres; mapped by time, the probe recovers
    the 10 ms signal to within the interpolation error (measured 1.2-1.4 % of its spread).  At
    a non-integer ratio a probe that only counts frames (rate round(period / 10 ms), aligned at
    frame 0) drifts off it (measured 29 %)."""
    target = _smooth_signal(6.0, 0.010, offset=-0.005)  # centred 10 ms frames: frame t at t * 10 ms
    hidden = _smooth_signal(6.0, period, offset=offset)
    ratio = period / 0.010
    timed = LayerProbe(8, ratio, offset / 0.010, hidden_size=32, highway_layers=2, n_mels=8)
    spread = float((target - target.mean(0)).abs().mean())
    l1_timed = _fit(timed, hidden, target)
    assert l1_timed < 0.03 * spread, (l1_timed, spread)
    if ratio != round(ratio):
        by_count = LayerProbe(8, round(ratio), -0.5, hidden_size=32, highway_layers=2, n_mels=8)
        l1_count = _fit(by_count, hidden, target)
        assert l1_count > 5 * l1_timed and l1_count > 0.15 * spread, (l1_count, l1_timed, spread)


def test_time_mapping_weights_lie_between_neighbouring_subframes():
    probe = LayerProbe(4, 3.2, 0.8, hidden_size=8, n_mels=2)
    assert probe.slots == 3
    lo, hi, w = probe.interpolation(200, torch.tensor([60, 20]))
    assert ((hi - lo) <= 1).all() and (w >= 0).all() and (w < 1).all()
    # an utterance's own last sub-frame bounds it: the second utterance has 20 * 3 sub-frames
    assert int(hi[1].max()) == 59 and int(hi[0].max()) == 179
    # aligned integer grids: every weight is exactly 0 (the paper's probe)
    lo, hi, w = LayerProbe(4, 4, -0.5, hidden_size=8).interpolation(40, torch.tensor([10]))
    assert not w.any() and lo[0].tolist() == list(range(40))


def test_each_layer_keeps_the_probe_of_its_own_lowest_validation_l1(tmp_path):
    """Layer a is best at epoch 2, layer b at epoch 4: the assembled checkpoint takes each
    probe's weights from that epoch and records the choice and the curves."""
    from espnet_probe.probe.trainer import LAYER_BEST, TRAINING_RECORD, assemble_layer_best

    valid = {"a": [0.9, 0.5, 0.6, 0.7], "b": [1.2, 1.0, 0.9, 0.8]}
    stats = {e + 1: {"train": {"loss": 1.0, "l1_a": 1.0, "l1_b": 1.0},
                     "valid": {"loss": (valid["a"][e] + valid["b"][e]) / 2,
                               "l1_a": valid["a"][e], "l1_b": valid["b"][e]}} for e in range(4)}
    torch.save({"reporter": {"stats": stats, "epoch": 4}}, tmp_path / "checkpoint.pth")
    for epoch in range(1, 5):  # every weight names its epoch
        torch.save({"asr.w": torch.zeros(2), "probes.a.w": torch.full((2,), float(epoch)),
                    "probes.b.w": torch.full((2,), float(epoch))}, tmp_path / f"{epoch}epoch.pth")
    for layer, best in (("a", 2), ("b", 4)):
        (tmp_path / f"valid.l1_{layer}.best.pth").symlink_to(f"{best}epoch.pth")
    record = assemble_layer_best(tmp_path, ["a", "b"])
    state = torch.load(tmp_path / LAYER_BEST)
    assert state["probes.a.w"].tolist() == [2.0, 2.0] and state["probes.b.w"].tolist() == [4.0, 4.0]
    assert record["layers"]["a"]["best_epoch"] == 2 and record["layers"]["b"]["best_epoch"] == 4
    assert record["layers"]["a"]["valid_l1"] == 0.5 and record["layers"]["b"]["valid_curve"] == valid["b"]
    # a is past its best (flat for 2 epochs of 3 asked: not yet "converged"); b still falls
    assert not record["layers"]["b"]["converged"]
    assert json.loads((tmp_path / TRAINING_RECORD).read_text()) == json.loads(json.dumps(record))


def test_sampled_frame_loss_equals_the_full_loss_on_the_same_frames():
    """forward_at computes exactly the frames forward would, for any layer timing."""
    torch.manual_seed(0)
    for ratio, offset in [(1, -0.5), (4, -0.5), (3.2, 0.3), (4.8, 1.1)]:
        probe = LayerProbe(12, ratio, offset, hidden_size=16, n_mels=5)
        t_layer = int(57 / ratio) + 2
        hidden = torch.randn(3, t_layer, 12)
        lengths = torch.tensor([t_layer, t_layer - 3, t_layer - 5])
        full = probe(hidden, 57, lengths)
        b, t = torch.randint(0, 3, (40,)), torch.randint(0, 57, (40,))
        sampled = probe.forward_at(hidden, lengths, b, t)
        assert torch.allclose(sampled, full[b, t], atol=1e-6)
        # and the same gradients: only the sampled slots' projection rows are computed
        grad_full = torch.autograd.grad(full[b, t].sum(), probe.upsample.weight)[0]
        grad_sampled = torch.autograd.grad(sampled.sum(), probe.upsample.weight)[0]
        assert torch.allclose(grad_sampled, grad_full, atol=1e-5)


def test_mixed_batches_deal_each_sampled_frame_once_over_the_next_steps():
    """mix_batches=N: after N-1 steps every step's loss is over equal shares of the last N
    batches' samples, and each sampled frame is used in exactly one step."""
    dealer = FrameDealer(4)
    seen = []
    for step in range(12):
        wanted = torch.stack([torch.full((600,), float(step)), torch.arange(600.0)], 1)  # (batch, frame)
        frames = SampledFrames(wanted.clone(), torch.zeros(600, dtype=torch.long), None, None,
                               torch.zeros(600))
        mixed, target = dealer.deal({"a": frames}, wanted)
        assert torch.equal(mixed["a"].lo, target)  # frames and targets stay paired
        batches = target[:, 0].long().tolist()
        if step >= 3:
            assert sorted(set(batches)) == list(range(step - 3, step + 1))
            assert all(batches.count(b) == 150 for b in set(batches))
        seen += [tuple(row) for row in target.tolist()]
    assert len(seen) == len(set(seen))  # none twice
    assert len(seen) == 12 * 600 - (3 + 2 + 1) * 150  # all but the parts still dealt out


def test_mixed_batches_train_on_several_utterances_per_step(tmp_path):
    asr = build_model(tmp_path, "blstm_small.yaml", "--encoder_conf", "hidden_size=8",
                      "--encoder_conf", "projection_size=8")
    layers = probed_layers(asr)
    with pytest.raises(ValueError, match="mix_batches"):
        ProbeModel(asr, layers, mix_batches=4)  # nothing to deal without a frame sample
    model = ProbeModel(asr, layers, hidden_size=16, sample_frames=40, mix_batches=4).train()
    torch.manual_seed(0)
    for step in range(6):
        x = 1.0 + 2.0 * torch.randn(1, 50, 240)
        loss, stats, _ = model(speech=x, speech_lengths=torch.tensor([50]))
        loss.backward()
        assert torch.isfinite(loss) and set(stats) == {"loss"} | {f"l1_{layer.name}" for layer in layers}
        assert len(model.dealer.pending) == min(step + 1, 3)  # the oldest is used up
    assert all(p.grad is not None for p in model.probes.parameters())
    model.eval()  # validation reads whole batches, nothing dealt
    model(speech=x, speech_lengths=torch.tensor([50]))
    assert len(model.dealer.pending) == 3
