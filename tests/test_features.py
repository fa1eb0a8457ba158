import numpy as np
import pytest
import torch

from espnet_probe.audio.features import FbankConfig, LogMelExtractor, delta, mel_filterbank

REPO_CONF = __import__("pathlib").Path(__file__).resolve().parents[1] / "conf" / "fbank.yaml"


@pytest.fixture(scope="module")
def cfg():
    return FbankConfig.from_yaml(REPO_CONF)


def test_documented_shape_and_channel_order(cfg):
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16000 + 123)).astype(np.float32)
    feats, log_mel = LogMelExtractor(cfg)(wav)
    assert feats.shape == (1 + wav.size // 160, 240)
    assert log_mel.shape == (feats.shape[0], 80)
    assert feats.dtype == np.float32
    np.testing.assert_array_equal(feats[:, :80], log_mel)
    np.testing.assert_allclose(feats[:, 80:160], delta(torch.from_numpy(log_mel), 2).numpy(),
                               atol=1e-6)


def test_delta_of_a_ramp_is_its_slope_and_accel_zero():
    ramp = torch.arange(20, dtype=torch.float32)[:, None] * torch.tensor([[0.5, -2.0]])
    d = delta(ramp, 2)
    np.testing.assert_allclose(d[2:-2].numpy(), np.tile([[0.5, -2.0]], (16, 1)), atol=1e-6)
    np.testing.assert_allclose(delta(d, 2)[4:-4].numpy(), 0.0, atol=1e-6)


def test_filterbank_covers_band_with_unit_peaks(cfg):
    fb = mel_filterbank(cfg)
    assert fb.shape == (80, 257)
    # the narrow low filters fall between FFT bins (31.25 Hz apart), so peaks are sampled below 1
    assert np.all(fb.max(axis=1) <= 1.0) and np.all(fb.max(axis=1) > 0.45)
    assert np.all(fb[40:].max(axis=1) > 0.75)
    hz = np.linspace(0, 8000, 257)
    assert fb[:, hz < cfg.fmin].sum() == 0 and fb[:, hz > cfg.fmax].sum() == 0
    centres = (fb * hz).sum(1) / fb.sum(1)
    assert np.all(np.diff(centres) > 0)


def test_tone_lands_in_the_right_filter(cfg):
    t = np.arange(16000) / 16000
    wav = 0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    _, log_mel = LogMelExtractor(cfg)(wav)
    fb = mel_filterbank(cfg)
    expected = int(np.argmax(fb[:, round(1000 / 8000 * 256)]))
    assert abs(int(np.median(log_mel.argmax(axis=1))) - expected) <= 1


def test_bad_config_and_short_audio_are_explained(tmp_path, cfg):
    bad = tmp_path / "fbank.yaml"
    bad.write_text("n_mels: 80\nhop_lenght: 160\n")
    with pytest.raises(ValueError, match="hop_lenght"):
        FbankConfig.from_yaml(bad)
    bad.write_text("fmax: 9000\n")
    with pytest.raises(ValueError, match="fmax"):
        FbankConfig.from_yaml(bad)
    with pytest.raises(ValueError, match="shorter than"):
        LogMelExtractor(cfg)(np.zeros(100, dtype=np.float32))
