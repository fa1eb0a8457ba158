"""ESPnet's s3prl frontend offline on a tiny random upstream, and its hidden layers with timing.

The upstreams are written by tests/ssl_upstream.py in the layout s3prl's ``hubert_local`` /
``wav2vec2_local`` loaders read, and ESPnet's S3prlFrontend is built on them with no network.
"""

from __future__ import annotations

import socket
import importlib.util
import subprocess
import sys
import zipfile

import pytest
import torch
import yaml

from espnet_probe.asr.s3prl_layers import s3prl_frontend_layers, s3prl_timing
from ssl_upstream import (s3prl_frontend_conf, tiny_asr_config, write_tiny_hubert,
                          write_tiny_wav2vec2)

WRITERS = {"hubert_local": write_tiny_hubert, "wav2vec2_local": write_tiny_wav2vec2}
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]
SAMPLES = (20800, 16000)  # 1.3 s and 1 s: 65 and 50 frames of 320 samples (s3prl rounds up)


@pytest.fixture
def no_network(monkeypatch):
    """Any name lookup, connection or s3prl download fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access: {args} {kwargs}")

    for name in ("getaddrinfo", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    import s3prl.util.download as download

    monkeypatch.setattr(download, "_download", refuse)


@pytest.fixture(scope="module")
def frontends(tmp_path_factory):
    """upstream name -> S3prlFrontend (eval mode) on that tiny upstream."""
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    root = tmp_path_factory.mktemp("ssl")
    built = {}
    for name, writer in WRITERS.items():
        ckpt = writer(root / f"{name}.pt")
        built[name] = S3prlFrontend(fs=16000, **s3prl_frontend_conf(ckpt, name)).eval()
    return built


def batch():
    torch.manual_seed(1)
    wave = torch.randn(2, max(SAMPLES))
    wave[1, SAMPLES[1]:] = 0
    return wave, torch.tensor(SAMPLES)


def test_checkpoint_writer_is_deterministic_and_in_s3prl_layout(tmp_path):
    before = torch.random.get_rng_state()
    paths = [write_tiny_hubert(tmp_path / d / "tiny.pt") for d in ("a", "b")]
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state is kept
    assert paths[0].read_bytes() == paths[1].read_bytes()
    other = torch.load(write_tiny_hubert(tmp_path / "c" / "tiny.pt", seed=1), weights_only=True)
    state = torch.load(paths[0], weights_only=True)  # s3prl loads it with torch's default
    assert sorted(state) == ["dictionaries_symbols", "model_cfg", "model_weight", "task_cfg"]
    assert state["model_cfg"]["encoder_layers"] == 2 and state["model_cfg"]["_name"] == "hubert"
    weight = "feature_extractor.conv_layers.0.0.weight"
    assert not torch.equal(state["model_weight"][weight], other["model_weight"][weight])
    w2v = torch.load(write_tiny_wav2vec2(tmp_path / "w2v.pt"), weights_only=True)
    assert sorted(w2v) == ["model_cfg", "model_weight", "task_cfg"]
    assert zipfile.is_zipfile(paths[0])


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_layers_and_weighted_sum_come_from_one_upstream_pass(frontends, name):
    frontend = frontends[name]
    with torch.no_grad():
        frontend.featurizer.weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
    wave, lengths = batch()
    calls = []
    hook = frontend.upstream.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            layers, feats, feat_lengths = s3prl_frontend_layers(frontend, wave, lengths)
    finally:
        hook.remove()
    assert len(calls) == 1
    with torch.no_grad():
        expected, expected_lengths = frontend(wave, lengths)
    assert torch.equal(feats, expected) and torch.equal(feat_lengths, expected_lengths)

    assert len(layers) == frontend.upstream.num_layers == 3  # before layer 1, after 1, after 2
    assert [n for n, _, _ in layers] == ["upstream0", "upstream1", "upstream2"]
    for _, hidden, hidden_lengths in layers:
        assert hidden.shape == (2, 65, 32)
        assert hidden_lengths.dtype == torch.int64
        assert torch.equal(hidden_lengths, feat_lengths)
    assert feat_lengths.tolist() == [65, 50]  # ceil(samples / 320)
    weights = torch.softmax(frontend.featurizer.weights.detach(), 0)
    mixed = sum(w * hidden for w, (_, hidden, _) in zip(weights, layers))
    torch.testing.assert_close(feats, mixed)


def test_one_layer_last_layer_and_tiling(frontends):
    frontend = frontends["hubert_local"]
    wave, lengths = batch()
    try:
        with torch.no_grad():
            frontend.layer = 1
            layers, feats, _ = s3prl_frontend_layers(frontend, wave, lengths)
            assert torch.equal(feats, layers[1][1])
            assert torch.equal(feats, frontend(wave, lengths)[0])
            frontend.layer, frontend.multilayer_feature = -1, False
            layers, feats, _ = s3prl_frontend_layers(frontend, wave, lengths)
            assert torch.equal(feats, layers[-1][1])
            assert torch.equal(feats, frontend(wave, lengths)[0])
            frontend.tile_factor = 2
            assert frontend(wave, lengths)[0].size(1) == 2 * 65  # lengths stay 65: not handled
            for call in (lambda: s3prl_frontend_layers(frontend, wave, lengths),
                         lambda: s3prl_timing(frontend)):
                with pytest.raises(NotImplementedError, match="tile_factor 2"):
                    call()
    finally:
        frontend.layer, frontend.multilayer_feature, frontend.tile_factor = -1, True, 1


def test_timing_is_measured_on_the_convolutions(frontends):
    """320 samples a frame; frame j spans [40 + 320 j, 360 + 320 j): centred on its receptive
    field [320 j, 320 j + 400). wav2vec 2.0's LayerNorm extractor is local, so its own gradient
    agrees; HuBERT's GroupNorm one reaches every sample (why only the convolutions are timed)."""
    for frontend in frontends.values():
        frontend.__dict__.pop("_probe_s3prl_timing", None)  # measured here, not cached
        with torch.inference_mode():  # as a caller extracting layers might be
            assert s3prl_timing(frontend) == (320, 40.0)
    for name, local in (("wav2vec2_local", True), ("hubert_local", False)):
        extractor = frontends[name].upstream.upstream.model.feature_extractor
        x = torch.randn(1, 3200, requires_grad=True)
        (grad,) = torch.autograd.grad(extractor(x)[0, :, 4].sum(), x)
        reached = grad[0].nonzero().flatten()
        span = (int(reached.min()), int(reached.max()))
        assert span == ((4 * 320, 4 * 320 + 399) if local else (0, 3199))


def test_espnet_builds_and_runs_the_asr_model_offline(tmp_path, no_network):
    from espnet2.asr.frontend.s3prl import S3prlFrontend
    from espnet2.tasks.asr import ASRTask

    conf = {**tiny_asr_config(write_tiny_hubert(tmp_path / "hubert.pt")), "token_list": TOKENS}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(conf))
    args = ASRTask.get_parser().parse_args(
        ["--config", str(tmp_path / "config.yaml"), "--output_dir", str(tmp_path)])
    model = ASRTask.build_model(args).eval()
    assert isinstance(model.frontend, S3prlFrontend) and model.frontend.output_size() == 32
    wave, lengths = batch()
    with torch.no_grad():
        out, out_lengths = model.encode(wave[:1], lengths[:1])
    assert out.shape == (1, 15, 32) and out_lengths.tolist() == [15]  # 65 frames, conv2d: 4x


def test_s3prl_imports_with_the_hook_after_espnet_imported_its_bare_package():
    """ESPnet's trainer module imports ``s3prl`` early; the hook still runs before ``s3prl.hub``
    (torchaudio >= 2.9 lacks two names it imports), as in tools/install.sh's import check."""
    code = ("import s3prl\n"
            # installs the hooks; typeguard off, as in our tools (on: ESPnet's imports 13.9 s)
            "import espnet_probe.utils.typecheck, espnet_probe\n"
            "import s3prl.nn\n"
            "from s3prl.hub import hf_hubert_custom\n"
            "try:\n"
            "    hf_hubert_custom('x')\n"
            "except ImportError as e:\n"
            "    print('refused:', e)\n"
            "print('ok', 'hubert_local' in s3prl.nn.S3PRLUpstream.available_names())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["ok", "True"]
    if importlib.util.find_spec("transformers") is None:  # as tools/install.sh leaves it
        assert "refused: s3prl's hf_hubert_custom upstream needs transformers" in proc.stdout
