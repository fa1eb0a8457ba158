"""STOI / PESQ on real speech, failure accounting, the job-split CLI, and mel distances."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
from scipy.fft import dct

from espnet_probe.audio.io import write_wav
from espnet_probe.bin import score_quality
from espnet_probe.metrics.mel import (MCD_SCALE, MelShapeError, mel_cepstral_distortion,
                                      mel_l1, mcd_per_frame)
from espnet_probe.metrics.quality import QualityError, align, score_pair, summarize

from conftest import LIBRISPEECH, need


@pytest.fixture(scope="module")
def speech() -> list[tuple[str, np.ndarray]]:
    """Four real utterances of different speakers, cropped to 3 s to keep the tests quick."""
    root = need(LIBRISPEECH) / "train-clean-5"
    out = []
    for spk_dir in sorted(root.iterdir())[:4]:
        flac = sorted(spk_dir.rglob("*.flac"))[0]
        wav = sf.read(flac, dtype="float32")[0]
        out.append((flac.stem, wav[8000:8000 + 3 * 16000]))
    return out


def noisy(wav: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(wav.size)
    gain = np.sqrt(np.mean(wav.astype(np.float64) ** 2) / np.mean(noise ** 2))
    noise *= gain / 10 ** (snr_db / 20)
    out = wav + noise
    return (out / max(1.0, np.abs(out).max())).astype(np.float32)


# ------------------------------------------------------------------ per-utterance metrics

def test_clean_against_itself_is_perfect_and_noise_lowers_scores(speech):
    utt, wav = speech[0]
    clean = score_pair(utt, wav, wav)
    assert not clean.errors
    assert clean.values["stoi"] > 0.99 and clean.values["estoi"] > 0.99
    assert clean.values["pesq"] > 4.3  # wideband PESQ tops out near 4.64
    mid = score_pair(utt, wav, noisy(wav, 10))
    bad = score_pair(utt, wav, noisy(wav, -5))
    for m in ("stoi", "estoi", "pesq"):
        assert clean.values[m] > mid.values[m] > bad.values[m], m
    assert bad.values["stoi"] < 0.8 and bad.values["pesq"] < 1.5


def test_stoi_and_estoi_match_pystoi_on_real_speech(speech):
    """One shared pass gives pystoi's own numbers (to float rounding) over a range of qualities."""
    from pystoi import stoi

    from espnet_probe.metrics.quality import _intelligibility

    for i, (_, wav) in enumerate(speech):
        ref = wav.astype(np.float64)
        for snr in (30, 5, -5):
            est = noisy(wav, snr, seed=i).astype(np.float64)
            ours = _intelligibility(ref, est, (False, True))
            assert ours == pytest.approx([stoi(ref, est, 16000), stoi(ref, est, 16000, True)],
                                         abs=1e-9)
    only_estoi = score_pair("u", speech[0][1], noisy(speech[0][1], 5), metrics=("estoi",))
    assert list(only_estoi.values) == ["estoi"]


def test_silent_estimate_is_a_counted_pesq_failure(speech):
    utt, wav = speech[1]
    res = score_pair(utt, wav, np.zeros_like(wav))
    assert math.isnan(res.values["pesq"]) and "silence" in res.errors["pesq"]
    assert res.values["stoi"] == pytest.approx(0.0, abs=1e-6)  # silence: no intelligibility
    short = score_pair(utt, wav[:2000], wav[:2000])  # 1/8 s: PESQ and STOI both undefined
    assert set(short.errors) == {"stoi", "estoi", "pesq"}
    assert "BufferTooShort" in short.errors["pesq"]


def test_length_alignment():
    ref, est = np.ones(1000), np.ones(900)
    r, e = align("u1", ref, est)
    assert r.size == e.size == 900
    with pytest.raises(QualityError, match="'u1'.*differ by 161"):
        align("u1", np.ones(1161), np.ones(1000))


def test_summary_t_interval():
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0]))
    # mean 2.5, sd 1.291, t(.975, 3) = 3.182 -> half width 2.054
    assert s["mean"] == 2.5 and s["n"] == 4
    assert s["ci95"][1] - 2.5 == pytest.approx(3.18245 * 1.29099 / 2, rel=1e-4)
    assert summarize(np.array([]))["mean"] is None
    assert summarize(np.array([1.0]))["ci95"] is None


# ------------------------------------------------------------------ the job-split CLI

def make_scps(tmp_path, speech):
    """Reference wav.scp and estimates: a copy, a noisy one, a silent one, one 100 samples short."""
    ref_lines, est_lines = [], []
    for i, (utt, wav) in enumerate(speech):
        write_wav(tmp_path / "ref" / f"{utt}.wav", wav)
        est = [wav, noisy(wav, 0), np.zeros_like(wav), wav[:-100]][i]
        write_wav(tmp_path / "est" / f"{utt}.wav", est)
        ref_lines.append(f"{utt} {tmp_path / 'ref' / f'{utt}.wav'}\n")
        est_lines.append(f"{utt} {tmp_path / 'est' / f'{utt}.wav'}\n")
    (tmp_path / "ref.scp").write_text("".join(sorted(ref_lines)))
    (tmp_path / "est.scp").write_text("".join(sorted(est_lines)))
    return str(tmp_path / "ref.scp"), str(tmp_path / "est.scp")


def test_cli_jobs_merge_resume_and_failures(tmp_path, speech, capsys):
    ref, est = make_scps(tmp_path, speech)
    out = tmp_path / "scores"
    args = ["--ref_scp", ref, "--est_scp", est, "--out", str(out), "--nj", "2"]
    with pytest.raises(SystemExit):
        score_quality.main(args + ["--job", "3"])
    assert score_quality.main(args + ["--merge"]) == 1
    assert "job 1 of 2 has not finished" in capsys.readouterr().err
    assert score_quality.main(args + ["--job", "1"]) == 0
    assert score_quality.main(args + ["--job", "2"]) == 0
    assert score_quality.main(args + ["--job", "1"]) == 0
    assert "already complete, skipped" in capsys.readouterr().err
    assert score_quality.main(args + ["--merge"]) == 0

    utts = [u for u, _ in speech]
    silent = utts[2]
    tables = {}
    for m in ("stoi", "estoi", "pesq"):
        lines = (out / m).read_text().splitlines()
        assert [x.split()[0] for x in lines] == sorted(utts)
        tables[m] = {x.split()[0]: float(x.split()[1]) for x in lines}
    assert math.isnan(tables["pesq"][silent])
    assert tables["stoi"][utts[0]] > 0.99 and tables["stoi"][utts[3]] > 0.99
    assert tables["pesq"][utts[1]] < tables["pesq"][utts[0]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pesq_failed"] == {"count": 1, "ids": [silent]}
    assert summary["pesq"]["n"] == 3 and summary["stoi"]["n"] == 4
    assert summary["pesq"]["mean"] == pytest.approx(
        np.mean([v for v in tables["pesq"].values() if not math.isnan(v)]))
    lo, hi = summary["stoi"]["ci95"]
    assert lo < summary["stoi"]["mean"] < hi

    # One-shot local run gives the same numbers
    out2 = tmp_path / "scores2"
    assert score_quality.main(["--ref_scp", ref, "--est_scp", est, "--out", str(out2),
                               "--metrics", "stoi,pesq"]) == 0
    # (pystoi's last bit can differ between processes, so compare to 1e-9)
    again = {x.split()[0]: float(x.split()[1]) for x in (out2 / "stoi").read_text().splitlines()}
    assert again == pytest.approx(tables["stoi"], abs=1e-9)
    assert not (out2 / "estoi").exists()

    # An estimate regenerated after its job ran makes that job stale for the merge
    write_wav(tmp_path / "est" / f"{sorted(utts)[0]}.wav", speech[0][1] * 0.5)
    assert score_quality.main(args + ["--merge"]) == 1
    assert "stale" in capsys.readouterr().err


def test_cli_rejects_length_mismatch_and_unknown_ids(tmp_path, speech, capsys):
    utt, wav = speech[0]
    write_wav(tmp_path / "r.wav", wav)
    write_wav(tmp_path / "e.wav", wav[:-400])
    (tmp_path / "ref.scp").write_text(f"{utt} {tmp_path / 'r.wav'}\n")
    (tmp_path / "est.scp").write_text(f"{utt} {tmp_path / 'e.wav'}\n")
    base = ["--ref_scp", str(tmp_path / "ref.scp"), "--out", str(tmp_path / "o")]
    assert score_quality.main(base + ["--est_scp", str(tmp_path / "est.scp")]) == 1
    err = capsys.readouterr().err
    assert f"'{utt}'" in err and "differ by 400" in err
    (tmp_path / "est2.scp").write_text(f"nosuchutt {tmp_path / 'e.wav'}\n")
    assert score_quality.main(base + ["--est_scp", str(tmp_path / "est2.scp")]) == 1
    assert "'nosuchutt'" in capsys.readouterr().err


# ------------------------------------------------------------------ mel metrics

def test_mel_l1_hand_cases():
    ref = np.zeros((5, 80))
    assert mel_l1(ref, ref) == 0.0
    assert mel_l1(ref + 0.5, ref) == pytest.approx(0.5)
    pred = ref.copy()
    pred[0, 0] = 80.0  # one cell off by 80 among 400 cells
    assert mel_l1(pred, ref) == pytest.approx(0.2)
    with pytest.raises(MelShapeError, match="6 predicted frames vs 5"):
        mel_l1(np.zeros((6, 80)), ref)
    assert mel_l1(np.ones((6, 80)), ref, max_len_diff=1) == pytest.approx(1.0)
    with pytest.raises(MelShapeError, match="'u7'"):
        mel_l1(np.zeros((5, 40)), ref, name="u7")
    with pytest.raises(MelShapeError, match="non-finite"):
        mel_l1(np.full((5, 80), np.nan), ref)


def test_mcd_hand_cases():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(7, 80))
    assert mel_cepstral_distortion(ref, ref) == 0.0
    # A level shift only moves c0, which MCD leaves out
    assert mel_cepstral_distortion(ref + 3.0, ref) == pytest.approx(0.0, abs=1e-9)
    # Adding a times the k-th orthonormal DCT basis vector changes only c_k, by a
    basis = dct(np.eye(80), type=2, norm="ortho", axis=0)  # row k = basis vector k
    a = 0.3
    expected = 10 / np.log(10) * np.sqrt(2 * a ** 2)  # = 1.842 dB
    assert MCD_SCALE == pytest.approx(4.3429448)
    assert mel_cepstral_distortion(ref + a * basis[1], ref) == pytest.approx(expected)
    assert mel_cepstral_distortion(ref + a * basis[24], ref) == pytest.approx(expected)
    assert mel_cepstral_distortion(ref + a * basis[25], ref) == pytest.approx(0.0, abs=1e-9)
    # Two coefficients: sqrt of the summed squares; per frame, then the mean over frames
    pred = ref.copy()
    pred[:3] += 0.3 * basis[2] + 0.4 * basis[5]  # first 3 frames: |d| = 0.5
    per = mcd_per_frame(pred, ref)
    np.testing.assert_allclose(per[:3], MCD_SCALE * np.sqrt(2) * 0.5)
    np.testing.assert_allclose(per[3:], 0.0, atol=1e-9)
    assert mel_cepstral_distortion(pred, ref) == pytest.approx(3 / 7 * MCD_SCALE * np.sqrt(2) * 0.5)
    with pytest.raises(ValueError, match="n_coeffs"):
        mel_cepstral_distortion(ref, ref, n_coeffs=80)
