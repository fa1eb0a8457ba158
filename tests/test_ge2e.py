"""GE2E embeddings on real speech: speaker separation, preprocessing guards, score_speaker CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from espnet_probe.audio.io import write_wav
from espnet_probe.bin import make_trials as make_trials_cli
from espnet_probe.bin import score_speaker as score_speaker_cli
from espnet_probe.metrics.trials import read_trials
from espnet_probe.speaker.embedder import cosine_scores
from espnet_probe.speaker.ge2e import GE2EEncoder

from conftest import LIBRISPEECH, need

N_SPK, N_UTT, SECONDS = 4, 3, 4


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, str, np.ndarray]]:
    """(utt, speaker, 4 s of audio) for 3 utterances of each of 4 real speakers."""
    root = need(LIBRISPEECH) / "train-clean-5"
    out = []
    for spk_dir in sorted(root.iterdir())[:N_SPK]:
        for flac in sorted(spk_dir.rglob("*.flac"))[:N_UTT]:
            wav = sf.read(flac, dtype="float32")[0]
            out.append((flac.stem, spk_dir.name, wav[:SECONDS * 16000]))
    return out


@pytest.fixture(scope="module")
def encoder() -> GE2EEncoder:
    return GE2EEncoder()


def test_same_speaker_pairs_score_higher(corpus, encoder):
    emb = encoder.embed([w for *_, w in corpus], [u for u, *_ in corpus])
    assert emb.shape == (len(corpus), 256)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    spk = np.array([s for _, s, _ in corpus])
    sim = emb @ emb.T
    same = (spk[:, None] == spk[None]) & ~np.eye(len(spk), dtype=bool)
    diff = spk[:, None] != spk[None]
    assert sim[same].mean() > sim[diff].mean() + 0.1
    # And for every speaker on its own, not just on average
    for s in set(spk):
        own = spk == s
        within = sim[np.ix_(own, own)][~np.eye(own.sum(), dtype=bool)]
        assert within.mean() > sim[np.ix_(own, ~own)].mean(), s
    assert encoder.stats.counts()["ok"] >= len(corpus)


def test_batched_embedding_equals_resemblyzer(corpus, encoder):
    wavs = [w for *_, w in corpus[:3]]
    ours = encoder.embed(wavs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the encoder does; 2 threads on a busy machine crawl
    try:
        ref = np.stack([encoder.model.embed_utterance(encoder.preprocess(w)[0]) for w in wavs])
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_mel_spectrogram_is_resemblyzers_bit_for_bit(corpus, encoder):
    """Computed without librosa's feature module, and the same bits as resemblyzer's own (so the
    embeddings, EERs and scores of a run are unchanged), for float32 and float64 audio of lengths
    on and off the hop grid."""
    from resemblyzer.audio import wav_to_mel_spectrogram

    for wav in [w for *_, w in corpus[:2]] + [corpus[2][2][:12345], corpus[3][2][:401]]:
        for dtype in (np.float32, np.float64):
            x = encoder.preprocess(wav)[0].astype(dtype)
            assert np.array_equal(encoder.mel_spectrogram(x), wav_to_mel_spectrogram(x)), (len(x), dtype)


def test_short_and_silent_audio_fall_back_and_are_counted(corpus, encoder):
    speech = corpus[0][2]
    cases = {"zeros": np.zeros(16000, np.float32), "empty": np.zeros(0, np.float32),
             "sub_lsb": np.full(16000, 1e-6, np.float32),
             "speech_100ms": speech[16000:17600], "speech_20ms": speech[16000:16320]}
    enc = GE2EEncoder()
    emb = enc.embed(list(cases.values()), list(cases))
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    status = enc.stats.status
    assert status["zeros"] == status["empty"] == status["sub_lsb"] == "silent"
    assert status["speech_100ms"] == status["speech_20ms"] == "vad_fallback"
    report = enc.stats.report()
    assert report["silent"]["count"] == 3 and report["vad_fallback"]["count"] == 2
    # Short speech still carries some of its speaker, unlike silence
    assert not np.allclose(emb[3], emb[0])
    with pytest.raises(ValueError, match="'bad'"):
        enc.embed([np.full(100, np.nan, np.float32)], ["bad"])


def write_corpus(tmp_path, corpus):
    scp, u2s = [], []
    for utt, spk, wav in corpus:
        path = tmp_path / "wav" / f"{utt}.wav"
        write_wav(path, wav)
        scp.append(f"{utt} {path}\n")
        u2s.append(f"{utt} {spk}\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(sorted(scp)))
    (data / "utt2spk").write_text("".join(sorted(u2s)))
    return data


def test_score_speaker_cli(tmp_path, corpus, capsys):
    data = write_corpus(tmp_path, corpus)
    trials = tmp_path / "trials"
    assert make_trials_cli.main(["--data_dir", str(data), "--out", str(trials),
                                 "--n_per_class", "12", "--seed", "0"]) == 0
    out = tmp_path / "speaker_ge2e"
    args = ["--wav_scp", str(data / "wav.scp"), "--trials", str(trials), "--out", str(out),
            "--n_boot", "200"]
    assert score_speaker_cli.main(args) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["n_target"] == res["n_nontarget"] == 12
    assert res["units"]["eer"] == "percent"
    assert 0 <= res["eer_ci"][0] <= res["eer"] <= res["eer_ci"][1] <= 100
    assert res["eer"] < 25  # clean real speech: GE2E separates these speakers well
    assert res["mindcf_ci"][0] <= res["mindcf"] <= res["mindcf_ci"][1]
    lines = (out / "scores").read_text().splitlines()
    tr = read_trials(trials)
    assert [tuple(x.split()[:2]) for x in lines] == [(a, b) for a, b, _ in tr.pairs]
    assert all(x.split()[3] in ("target", "nontarget") for x in lines)
    with np.load(out / "embeddings.npz") as z:
        assert z["embeddings"].shape == (len(tr.utterances()), 256)
        utts, emb = list(z["utts"]), z["embeddings"]
    scores = np.array([float(x.split()[2]) for x in lines])
    np.testing.assert_allclose(scores, cosine_scores((utts, emb), tr), atol=1e-6)
    capsys.readouterr()

    # A re-run reuses the embeddings; two worker processes give the same embeddings
    assert score_speaker_cli.main(args) == 0
    assert "reusing" in capsys.readouterr().err
    out2 = tmp_path / "speaker_ge2e_nj2"
    assert score_speaker_cli.main(args[:-4] + ["--out", str(out2), "--nj", "2",
                                               "--n_boot", "200"]) == 0
    with np.load(out2 / "embeddings.npz") as z:
        assert list(z["utts"]) == utts
        np.testing.assert_allclose(z["embeddings"], emb, atol=1e-5)
    assert json.loads((out2 / "result.json").read_text())["eer"] == pytest.approx(res["eer"])

    # A trial utterance missing from wav.scp is an error that names it
    first = sorted(tr.utterances())[0]
    scp = (data / "wav.scp").read_text().splitlines()
    (tmp_path / "partial.scp").write_text("\n".join(x for x in scp if x.split()[0] != first) + "\n")
    assert score_speaker_cli.main(["--wav_scp", str(tmp_path / "partial.scp"), "--trials",
                                   str(trials), "--out", str(tmp_path / "o3")]) == 1
    assert f"'{first}'" in capsys.readouterr().err
