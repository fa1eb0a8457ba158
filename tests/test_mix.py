"""Mixing at an exact SNR: definition, looping/cropping, babble, anti-clipping, silent input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from espnet_probe.audio.mix import (MixError, energy, fit_length, make_babble, mix_at_snr,
                                    random_offset, snr_db)

from conftest import LIBRISPEECH, MUSAN_MINI, need


def measured_snr(clean: np.ndarray, mixture: np.ndarray, gain: float) -> float:
    """SNR as a listener of the file would measure it: the speech in the mixture is
    gain * clean, everything else is noise."""
    speech = gain * clean.astype(np.float64)
    return snr_db(speech, mixture.astype(np.float64) - speech)


@pytest.fixture(scope="module")
def real_speech() -> list[np.ndarray]:
    flacs = sorted((need(LIBRISPEECH) / "train-clean-5").rglob("*.flac"))[:40:10]
    return [sf.read(f, dtype="float32")[0] for f in flacs]


@pytest.fixture(scope="module")
def real_noises() -> dict[str, list[np.ndarray]]:
    musan = need(MUSAN_MINI)
    out = {}
    for folder in ("noise", "music", "speech"):
        out[folder] = [sf.read(f, dtype="float32")[0]
                       for f in sorted((musan / folder).rglob("*.wav"))]
    return out


def test_snr_definition_and_exactness_synthetic():
    rng = np.random.default_rng(0)
    speech = (0.1 * np.sin(np.arange(16000) * 0.05) * rng.uniform(0.2, 1, 16000)).astype(np.float32)
    noise = rng.standard_normal(16000).astype(np.float32)
    for target in (-5.0, 0.0, 7.31, 20.0, 35.0):
        m = mix_at_snr(speech, noise, target)
        assert m.gain == 1.0
        # whole-utterance energy ratio, by hand
        n_added = m.mixture.astype(np.float64) - speech
        by_hand = 10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum(n_added ** 2))
        assert by_hand == pytest.approx(target, abs=0.01)
        # the noise added is the given noise, only scaled
        k = np.dot(n_added, noise) / np.dot(noise, noise.astype(np.float64))
        assert np.allclose(n_added, k * noise, atol=1e-6)


def test_anti_clipping_scales_the_mixture_and_keeps_the_snr():
    rng = np.random.default_rng(1)
    speech = (0.95 * np.sin(np.arange(8000) * 0.01)).astype(np.float32)  # loud
    noise = rng.standard_normal(8000).astype(np.float32)
    m = mix_at_snr(speech, noise, 0.0)
    assert m.gain < 1.0
    assert np.max(np.abs(m.mixture)) == pytest.approx(0.99, abs=1e-6)
    assert measured_snr(speech, m.mixture, m.gain) == pytest.approx(0.0, abs=0.01)
    # a lower limit scales harder and still keeps the SNR
    m2 = mix_at_snr(speech, noise, 0.0, peak_limit=0.5)
    assert m2.gain == pytest.approx(m.gain * 0.5 / 0.99, rel=1e-6)
    assert measured_snr(speech, m2.mixture, m2.gain) == pytest.approx(0.0, abs=0.01)


def test_fit_length_crops_and_loops():
    noise = np.arange(10, dtype=np.float32)
    assert fit_length(noise, 4, 3).tolist() == [3, 4, 5, 6]
    assert fit_length(noise, 4, 6).tolist() == [6, 7, 8, 9]
    assert fit_length(noise, 4, 8).tolist() == [8, 9, 0, 1]        # wraps
    assert fit_length(noise, 25, 7).tolist() == [(7 + i) % 10 for i in range(25)]
    with pytest.raises(MixError, match="offset 10 is outside"):
        fit_length(noise, 4, 10)
    with pytest.raises(MixError, match="no samples"):
        fit_length(np.zeros(0, np.float32), 4, 0)


def test_random_offset_ranges():
    rng = np.random.default_rng(0)
    long_offsets = {random_offset(100, 90, rng) for _ in range(500)}
    assert long_offsets == set(range(11))  # every crop position fits inside the noise
    short_offsets = {random_offset(10, 90, rng) for _ in range(500)}
    assert short_offsets == set(range(10))  # any sample may start the loop


def test_babble_is_invariant_to_talker_levels():
    rng = np.random.default_rng(2)
    talkers = [rng.standard_normal(4000) * s for s in (0.001, 0.3, 5.0)]
    b1 = make_babble(talkers)
    b2 = make_babble([t * f for t, f in zip(talkers, (700.0, 0.2, 3.0))])
    assert np.allclose(b1, b2)
    # independent unit-energy talkers: babble energy ~ number of talkers
    assert energy(b1) == pytest.approx(3.0, rel=0.1)
    with pytest.raises(MixError, match="talker 1 has 10 samples"):
        make_babble([np.ones(20), np.ones(10)])


def test_silent_speech_or_noise_is_a_clear_error():
    rng = np.random.default_rng(3)
    speech = (0.1 * rng.standard_normal(1600)).astype(np.float32)
    noise = rng.standard_normal(1600).astype(np.float32)
    with pytest.raises(MixError, match="speech is silent"):
        mix_at_snr(np.zeros(1600, np.float32), noise, 10)
    with pytest.raises(MixError, match="noise is silent"):
        mix_at_snr(speech, np.zeros(1600, np.float32), 10)
    with pytest.raises(MixError, match="noise is silent"):  # below -80 dBFS counts as silence
        mix_at_snr(speech, 1e-5 * noise, 10)
    with pytest.raises(MixError, match="talker 0 is silent"):
        make_babble([np.zeros(100), np.ones(100)])
    with pytest.raises(MixError, match="fit the noise"):
        mix_at_snr(speech, noise[:100], 10)


@pytest.mark.parametrize("folder", ["noise", "music", "speech"])
@pytest.mark.parametrize("target", [20.0, 10.0, 0.0])
def test_real_speech_and_musan_snr_within_0p1_db(real_speech, real_noises, folder, target):
    rng = np.random.default_rng(int(target) + len(folder))
    for speech in real_speech:
        if folder == "speech":  # babble of 5 talkers
            picks = rng.choice(len(real_noises["speech"]), 5, replace=False)
            segs = []
            for i in picks:
                src = real_noises["speech"][i]
                segs.append(fit_length(src, speech.size, random_offset(src.size, speech.size, rng)))
            noise = make_babble(segs)
        else:
            src = real_noises[folder][int(rng.integers(len(real_noises[folder])))]
            noise = fit_length(src, speech.size, random_offset(src.size, speech.size, rng))
        m = mix_at_snr(speech, noise, target)
        assert np.max(np.abs(m.mixture)) <= 0.99 + 1e-6
        assert measured_snr(speech, m.mixture, m.gain) == pytest.approx(target, abs=0.1)
        # the same through 16-bit quantisation, as the written files are
        q = np.round(m.mixture * 32767) / 32767
        assert measured_snr(speech, q, m.gain) == pytest.approx(target, abs=0.1)


def test_real_speech_loud_triggers_gain_and_keeps_snr(real_speech, real_noises):
    gains = []
    for speech in real_speech:
        speech = speech * (0.98 / np.max(np.abs(speech)))
        for music in real_noises["music"]:
            m = mix_at_snr(speech, fit_length(music, speech.size, 1000), 0.0)
            gains.append(m.gain)
            assert np.max(np.abs(m.mixture)) <= 0.99 + 1e-6
            assert measured_snr(speech, m.mixture, m.gain) == pytest.approx(0.0, abs=0.1)
    assert sum(g < 1.0 for g in gains) >= len(gains) // 2  # the gain did kick in, often
