"""The linear speaker-ID probe: Wilson intervals, the per-speaker split, pooling, the classifier
on synthetic hidden states, input errors, and the CLI end to end on real LibriSpeech speech."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from scipy.stats import binomtest

from conftest import LIBRISPEECH, need
from espnet_probe.probe.speaker_id import (
    SpeakerProbeError, fit_and_predict, pool_hidden, pooled_layers, speaker_id_probe,
    split_by_speaker, wilson_interval)
from espnet_probe.utils.kaldi_dir import write_table

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "asr_tiny"
TINY_LAYERS = ["input", "cnn1", "cnn2", "pool1", "cnn3", "cnn4", "pool2", "blstm1"]


@pytest.fixture(scope="module")
def tiny_model():
    from espnet_probe.layers import load_asr_model

    return load_asr_model(FIXTURE / "config.yaml", FIXTURE / "valid.loss.best.pth")


def test_wilson_interval_hand_checked():
    # by hand: centre (p + z²/2n) / (1 + z²/n), half-width z/(1 + z²/n) * sqrt(p(1-p)/n + z²/4n²)
    assert wilson_interval(8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    assert wilson_interval(50, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    for correct, n in [(1, 3), (17, 40), (139, 140)]:
        reference = binomtest(correct, n).proportion_ci(method="wilson")
        assert wilson_interval(correct, n) == pytest.approx((reference.low, reference.high), abs=1e-9)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_split_is_seeded_per_speaker_and_disjoint():
    sizes = {"a": 2, "b": 3, "c": 4, "d": 8, "e": 10}
    utt2spk = {f"{spk}-{i:02d}": spk for spk, n in sizes.items() for i in range(n)}
    train, held = split_by_speaker(utt2spk, 0.25, seed=0)
    assert not set(train) & set(held) and set(train) | set(held) == set(utt2spk)
    held_per_speaker = {spk: sum(utt2spk[u] == spk for u in held) for spk in sizes}
    assert held_per_speaker == {"a": 1, "b": 1, "c": 1, "d": 2, "e": 3}  # >= 1 held, >= 1 left
    assert split_by_speaker(utt2spk, 0.25, seed=0) == (train, held)
    assert split_by_speaker(utt2spk, 0.25, seed=1)[1] != held
    # a speaker's split does not depend on who else is in the set
    fewer = {u: s for u, s in utt2spk.items() if s != "d"}
    assert split_by_speaker(fewer, 0.25, seed=0)[1] == [u for u in held if utt2spk[u] != "d"]
    with pytest.raises(SpeakerProbeError, match="fewer than 2 utterances.*: solo, solo2"):
        split_by_speaker({**utt2spk, "x1": "solo", "x2": "solo2"})
    with pytest.raises(ValueError, match="held_out"):
        split_by_speaker(utt2spk, 1.0)


def test_pooling_uses_only_valid_frames():
    hidden = torch.randn(2, 7, 3)
    hidden[1, 4:] = 1e6  # junk beyond the second utterance's length must not count
    pooled = pool_hidden(hidden, torch.tensor([7, 4]))
    valid = hidden[1, :4].double().numpy()
    assert pooled.shape == (2, 6)
    np.testing.assert_allclose(pooled[1], np.concatenate([valid.mean(0), valid.std(0)]), rtol=1e-12)
    np.testing.assert_allclose(pool_hidden(hidden, torch.tensor([7, 4]), "mean"), pooled[:, :3])
    assert np.array_equal(pool_hidden(hidden, torch.tensor([7, 1]))[1, 3:], np.zeros(3))


def synthetic_layer(rng, n_speakers=10, utts_per_speaker=40, dim=16):
    """Zero-padded (N, T, D) hidden states whose frames are a speaker vector plus frame noise."""
    speaker_vectors = rng.standard_normal((n_speakers, dim))
    speakers = np.repeat(np.arange(n_speakers), utts_per_speaker)
    lengths = rng.integers(20, 60, size=len(speakers))
    hidden = np.zeros((len(speakers), lengths.max(), dim))
    for i, (spk, t) in enumerate(zip(speakers, lengths)):
        hidden[i, :t] = speaker_vectors[spk] + 2.0 * rng.standard_normal((t, dim))
    return torch.from_numpy(hidden), torch.from_numpy(lengths), speakers


def test_probe_reads_linearly_encoded_speakers_and_not_random_labels():
    rng = np.random.default_rng(0)
    hidden, lengths, speakers = synthetic_layer(rng)
    pooled = pool_hidden(hidden, lengths)
    utt2spk = {f"u{i:03d}": f"s{spk}" for i, spk in enumerate(speakers)}
    train, held = split_by_speaker(utt2spk, 0.25, seed=0)
    rows = {utt: i for i, utt in enumerate(utt2spk)}
    tr, te = [rows[u] for u in train], [rows[u] for u in held]
    predicted, converged = fit_and_predict(pooled[tr], speakers[tr], pooled[te])
    assert converged and len(held) == 100
    assert (predicted == speakers[te]).mean() >= 0.98
    # the same features with labels that carry no information: about chance (1/10)
    shuffled = rng.permutation(speakers)
    predicted, _ = fit_and_predict(pooled[tr], shuffled[tr], pooled[te])
    assert (predicted == shuffled[te]).mean() <= 0.22


def write_dump(root: Path, mats: dict[str, np.ndarray], utt2spk: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    with kaldiio.WriteHelper(f"ark,scp:{root}/feats.ark,{root}/feats.scp") as writer:
        for utt, mat in mats.items():
            writer[utt] = mat.astype(np.float32)
    write_table(root / "utt2spk", utt2spk)
    return root


def seeded_mats(n_speakers=3, utts_per_speaker=3, seed=0):
    rng = np.random.default_rng(seed)
    mats, utt2spk = {}, {}
    for spk in range(n_speakers):
        for i in range(utts_per_speaker):
            utt = f"s{spk}-{i}"
            mats[utt] = 1.0 + 2.0 * rng.standard_normal((int(rng.integers(30, 90)), 240))
            utt2spk[utt] = f"s{spk}"
    return mats, utt2spk


def test_one_encoder_pass_per_batch_and_batching_does_not_leak(tiny_model, tmp_path):
    mats, utt2spk = seeded_mats()
    dump = write_dump(tmp_path / "dump", mats, utt2spk)
    utts = sorted(mats)
    first_conv = next(m for m in tiny_model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    calls = []
    handle = first_conv.register_forward_hook(lambda *_: calls.append(1))
    try:
        batched = pooled_layers(tiny_model, dump / "feats.scp", utts, batch_frames=200)
    finally:
        handle.remove()
    assert len(calls) == 4  # 9 utterances of 30-89 frames, <= 200 padded frames: 4 batches
    assert [pooled.layer.name for pooled in batched] == TINY_LAYERS
    assert [pooled.layer.index for pooled in batched] == list(range(len(TINY_LAYERS)))
    one_by_one = pooled_layers(tiny_model, dump / "feats.scp", utts, batch_frames=1)
    for a, b in zip(batched, one_by_one):
        assert a.layer == b.layer
        np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-5, err_msg=a.layer.name)


def test_bad_input_names_the_utterance_and_file(tiny_model, tmp_path):
    mats, utt2spk = seeded_mats()
    no_feats = write_dump(tmp_path / "no_feats", {u: m for u, m in mats.items() if u != "s1-2"}, utt2spk)
    with pytest.raises(SpeakerProbeError, match=r"s1-2 is in .*utt2spk but has no features in .*feats\.scp"):
        speaker_id_probe(tiny_model, no_feats)
    no_spk = write_dump(tmp_path / "no_spk", mats, {u: s for u, s in utt2spk.items() if u != "s0-1"})
    with pytest.raises(SpeakerProbeError, match=r"s0-1 is in .*feats\.scp but has no speaker in .*utt2spk"):
        speaker_id_probe(tiny_model, no_spk)
    mats["s2-0"][5, 7] = np.nan
    with_nan = write_dump(tmp_path / "nan", mats, utt2spk)
    with pytest.raises(SpeakerProbeError, match=r"feats\.scp: utterance s2-0 has NaN"):
        speaker_id_probe(tiny_model, with_nan)


def librispeech_dump(root: Path, n_speakers: int, utts_per_speaker: int, seconds: float) -> Path:
    """Features of the first utterances of the first LibriSpeech speakers, with utt2spk."""
    from espnet_probe.audio.features import FbankConfig, LogMelExtractor

    corpus = need(LIBRISPEECH / "train-clean-5")
    extractor = LogMelExtractor(FbankConfig())
    mats, utt2spk = {}, {}
    for speaker in sorted(p for p in corpus.iterdir() if p.is_dir())[:n_speakers]:
        for flac in sorted(speaker.rglob("*.flac"))[:utts_per_speaker]:
            wav, rate = soundfile.read(flac, dtype="float32")
            mats[flac.stem] = extractor(wav[: int(rate * seconds)])[0]
            utt2spk[flac.stem] = speaker.name
    return write_dump(root, mats, utt2spk)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_on_real_speech_writes_one_row_per_layer_and_resumes(tmp_path, capsys):
    from espnet_probe.bin.speaker_id_probe import main

    dump = librispeech_dump(tmp_path / "dump", n_speakers=6, utts_per_speaker=6, seconds=2.0)
    out = tmp_path / "speaker_id"
    argv = ["--asr_exp", str(FIXTURE), "--feats_dir", str(dump), "--out", str(out)]
    assert main(argv) == 0
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == ["layer", "layer_index", "accuracy", "ci_low", "ci_high", "n",
                             "n_speakers", "chance"]
    assert [r["layer"] for r in rows] == TINY_LAYERS
    assert [int(r["layer_index"]) for r in rows] == list(range(len(TINY_LAYERS)))
    for r in rows:
        assert (int(r["n"]), int(r["n_speakers"]), float(r["chance"])) == (12, 6, pytest.approx(1 / 6, abs=1e-5))
        assert 0 <= float(r["ci_low"]) <= float(r["accuracy"]) <= float(r["ci_high"]) <= 1
        assert float(r["accuracy"]) * 12 == pytest.approx(round(float(r["accuracy"]) * 12), abs=1e-3)
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith("speaker_id_probe asr_tiny (trained)") and "blstm1" in summary

    stamp = (out / "results.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert "already done" in capsys.readouterr().err
    assert (out / "results.json").stat().st_mtime_ns == stamp

    # the control: the same normalised input, a different (random) encoder
    assert main(argv[:-1] + [str(tmp_path / "random"), "--asr_init", "random"]) == 0
    control = read_csv(tmp_path / "random" / "results.csv")
    assert control[0] == rows[0]
    assert json.loads((tmp_path / "random" / "results.json").read_text())["asr_init"] == "random"
    assert main(argv[:-1] + [str(tmp_path / "bad"), "--feats_dir", str(tmp_path)]) == 1
    assert "feats.scp not found" in capsys.readouterr().err
