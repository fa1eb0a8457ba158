"""The embedded espeak-ng corpus: voices, splits, audio, determinism, idempotence, CLI."""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet_probe.data import embedded as E
from espnet_probe.data import sentences as S
from espnet_probe.utils.kaldi_dir import load_data_dir

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "dev", "test")


def _build(out: Path, nj: int = 2, **kw) -> dict:
    return E.build_corpus(E.CorpusConfig(out=str(out), **kw), nj=nj, progress=False)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The full default corpus, generated once per test session."""
    out = tmp_path_factory.mktemp("embedded") / "data"
    t0 = time.time()
    summary = _build(out, seed=0)
    summary["fixture_seconds"] = time.time() - t0
    return out, summary


@pytest.fixture(scope="session")
def data_dirs(corpus):
    out, _ = corpus
    return {s: load_data_dir(out / s, extra_files=("utt2dur",)) for s in SPLITS}


def _wavs(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.wav"))}


# ---------------------------------------------------------------- sentences

def test_sentence_pools_are_disjoint_normalised_and_seeded():
    pools = S.sentence_pools({"train": 300, "dev": 50, "test": 80}, seed=3)
    sets = {k: set(v) for k, v in pools.items()}
    assert [len(sets[k]) for k in ("train", "dev", "test")] == [300, 50, 80]
    assert not sets["train"] & sets["dev"] and not sets["train"] & sets["test"]
    assert not sets["dev"] & sets["test"]
    vocab = S.vocabulary()
    assert 150 <= len(vocab) <= 250
    for sent in pools["train"]:
        assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", sent), sent
        assert S.MIN_WORDS <= len(sent.split()) <= S.MAX_WORDS
        assert set(sent.split()) <= vocab
    assert S.sentence_pools({"train": 300, "dev": 50, "test": 80}, seed=3) == pools
    assert S.generate_sentences(50, seed=4) != S.generate_sentences(50, seed=3)
    assert S.normalize("  Don’t stop, 3 cats!  ") == "DON'T STOP CATS"


# ---------------------------------------------------------------- voices and synthesis

def test_voice_catalogue_is_large_distinct_and_available():
    corpus_voices = [v for v in E.VOICES if v.split in SPLITS]
    assert len(corpus_voices) >= 20
    recipes = [(v.dialect, v.variant, v.pitch, v.range, v.rate) for v in E.VOICES]
    assert len(set(recipes)) == len(recipes)
    assert len({v.spk for v in E.VOICES}) == len(E.VOICES)
    assert len({v.dialect for v in corpus_voices}) >= 6
    assert {v.gender for v in corpus_voices} == {"m", "f"}
    E.check_voices()  # every dialect and variant exists in the shipped espeak-ng data
    assert "en-us" in E.available_dialects() and "m1" in E.available_variants()


def test_unknown_variant_is_refused():
    bad = E.Voice("spk99", "train", "m", "en-us", "no-such-variant", 50, 50, 175)
    with pytest.raises(E.EspeakError, match="spk99.*no-such-variant"):
        E.check_voices([bad])
    bad = E.Voice("spk98", "train", "m", "en-xx", "m1", 50, 50, 175)
    with pytest.raises(E.EspeakError, match="spk98.*en-xx"):
        E.check_voices([bad])


def test_short_sentence_has_sensible_duration():
    voice = E.VOICES[0]
    wav = E.synthesize("HELLO WORLD", voice, np.random.default_rng(1))
    dur = wav.size / E.SAMPLE_RATE
    assert wav.dtype == np.float32 and 0.6 < dur < 2.5
    assert 0.35 <= np.max(np.abs(wav)) <= 0.9
    long = E.synthesize("THE OLD FARMER CARRIED A HEAVY BASKET TO THE MARKET TODAY", voice,
                        np.random.default_rng(1))
    assert long.size > 2 * wav.size
    fast = E.Voice(**{**voice.__dict__, "rate": 300})
    assert E.synthesize("THE OLD FARMER CARRIED A HEAVY BASKET TO THE MARKET TODAY", fast,
                        np.random.default_rng(1)).size < 0.8 * long.size


# ---------------------------------------------------------------- the generated corpus

@pytest.mark.integration
def test_corpus_size_and_summary(corpus, data_dirs):
    out, summary = corpus
    print(f"\nembedded corpus generated in {summary['fixture_seconds']:.1f} s: "
          f"{summary['utterances']} utts, {summary['hours']:.3f} h")
    n = sum(len(d.utt2spk) for d in data_dirs.values())
    assert n >= 600
    assert summary["per_split"] == {"train": 448, "dev": 64, "test": 128, "babble": 32}
    assert n == summary["per_split"]["train"] + summary["per_split"]["dev"] \
        + summary["per_split"]["test"]
    assert summary["skipped"] is False and summary["voices"] == len(E.VOICES)


@pytest.mark.integration
def test_speakers_tsv_records_each_recipe(corpus):
    out, _ = corpus
    rows = E.read_speakers_tsv(out / "local" / "embedded" / "speakers.tsv")
    assert [r["spk"] for r in rows] == [v.spk for v in E.VOICES]
    for row, v in zip(rows, E.VOICES):
        assert (row["split"], row["dialect"], row["variant"], row["espeak_voice"]) == \
            (v.split, v.dialect, v.variant, v.name)
        assert (int(row["pitch"]), int(row["range"]), int(row["rate"])) == \
            (v.pitch, v.range, v.rate)


@pytest.mark.integration
def test_splits_are_by_speaker(data_dirs):
    spks = {s: set(d.utt2spk.values()) for s, d in data_dirs.items()}
    assert len(spks["train"]) == 14 and len(spks["dev"]) == 2 and len(spks["test"]) == 4
    assert not spks["test"] & spks["train"]
    assert not spks["dev"] & spks["train"] and not spks["dev"] & spks["test"]
    for d in data_dirs.values():
        for utt, spk in d.utt2spk.items():
            assert re.fullmatch(rf"{spk}-\d{{4}}", utt)


@pytest.mark.integration
def test_transcripts_normalised_and_not_shared(data_dirs):
    texts = {s: set(d.text.values()) for s, d in data_dirs.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["dev"]
    for d in data_dirs.values():
        for utt, t in d.text.items():
            assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", t), f"{utt}: {t!r}"


@pytest.mark.integration
def test_audio_is_16k_mono_pcm_and_not_silent(corpus, data_dirs):
    out, _ = corpus
    for split, d in data_dirs.items():
        for utt in d.utt_ids:
            path = Path(d.wav_scp[utt])
            assert path.is_relative_to(out / "local" / "embedded" / "wav" / d.utt2spk[utt])
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            wav, _ = sf.read(path, dtype="float32")
            assert 1.0 < wav.size / 16000 < 6.0, utt
            assert abs(wav.size / 16000 - float(d.extra["utt2dur"][utt])) < 1e-3
            peak = np.max(np.abs(wav))
            assert 0.3 < peak < 0.95, utt
            assert np.sqrt(np.mean(wav ** 2)) > 0.02, f"{utt} is (nearly) silent"
            lead = np.max(np.abs(wav[:1200]))  # the first 75 ms is padding, not speech
            assert lead < 0.01 * peak + 1e-3, utt


@pytest.mark.integration
def test_spk2gender_matches_catalogue(corpus):
    out, _ = corpus
    genders = {v.spk: v.gender for v in E.VOICES}
    for s in SPLITS:
        for line in (out / s / "spk2gender").read_text().splitlines():
            spk, g = line.split()
            assert genders[spk] == g


@pytest.mark.integration
def test_babble_pool_uses_voices_outside_every_split(corpus, data_dirs):
    out, _ = corpus
    babble = sorted((out / "local" / "noise" / "speech" / "espeak").glob("*.wav"))
    assert len(babble) == 4 * 8
    babble_spks = {p.name.split("-")[0] for p in babble}
    assert len(babble_spks) == 4
    for d in data_dirs.values():
        assert not babble_spks & set(d.utt2spk.values())
    for p in babble:
        info = sf.info(p)
        assert (info.samplerate, info.channels) == (16000, 1)


@pytest.mark.integration
def test_rerun_is_a_no_op(corpus):
    out, _ = corpus
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    summary = _build(out, seed=0)
    assert summary["skipped"] is True and summary["seconds"] < 2
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert before == after


@pytest.mark.integration
def test_same_seed_gives_identical_files(tmp_path):
    """Another run, with a different --nj, must reproduce every byte. A small corpus is enough:
    each utterance is seeded by (seed, voice, index) whatever the size, and it has every voice."""
    out, other = tmp_path / "nj2" / "data", tmp_path / "nj1" / "data"
    _build(out, nj=2, seed=0, utts_per_voice=2, babble_utts=2)
    _build(other, nj=1, seed=0, utts_per_voice=2, babble_utts=2)
    wav_a, wav_b = _wavs(out / "local"), _wavs(other / "local")
    assert wav_a.keys() == wav_b.keys() and len(wav_a) == 2 * 20 + 2 * 4
    different = [k for k in wav_a if not filecmp.cmp(wav_a[k], wav_b[k], shallow=False)]
    assert not different, f"{len(different)} wavs differ, e.g. {different[:3]}"
    for s in SPLITS:
        for name in ("text", "utt2spk", "spk2utt", "utt2dur", "spk2gender"):
            assert (out / s / name).read_bytes() == (other / s / name).read_bytes()
        scp = (out / s / "wav.scp").read_text().replace(str(out), str(other))
        assert scp == (other / s / "wav.scp").read_text()


# ---------------------------------------------------------------- small corpora: config changes

@pytest.mark.integration
def test_new_settings_regenerate_and_remove_stale_files(tmp_path):
    out = tmp_path / "data"
    _build(out, seed=0, utts_per_voice=2, babble_utts=1)
    text0 = (out / "train" / "text").read_text()
    _build(out, seed=1, utts_per_voice=2, babble_utts=1)
    assert (out / "train" / "text").read_text() != text0
    _build(out, seed=1, utts_per_voice=1, babble_utts=1)
    data = load_data_dir(out / "train")
    assert len(data.utt2spk) == 14
    assert not list((out / "local" / "embedded" / "wav").rglob("*-0002.wav"))
    assert '"seed": 1' in (out / "local" / "embedded" / ".done").read_text()


@pytest.mark.integration
def test_interrupted_run_is_completed_identically(tmp_path):
    out = tmp_path / "data"
    _build(out, seed=2, utts_per_voice=2, babble_utts=1)
    ref = {k: p.read_bytes() for k, p in _wavs(out / "local").items()}
    # What a kill mid-run leaves: no .done, the stamp of the settings it began with, some voices
    # missing, and a temp file of an unfinished write.
    local = out / "local" / "embedded"
    record = json.loads((local / ".done").read_text())
    (local / ".done").unlink()
    (local / ".started").write_text(json.dumps({"settings": record["settings"]}))
    for p in (local / "wav" / "spk03").glob("*.wav"):
        p.unlink()
    (local / "wav" / "spk05" / "spk05-0001.wav").unlink()
    (local / "wav" / "spk05" / ".spk05-0001.wav.abc123.tmp").write_bytes(b"RIFF")
    summary = _build(out, seed=2, utts_per_voice=2, babble_utts=1)
    assert summary["skipped"] is False
    now = {k: p.read_bytes() for k, p in _wavs(out / "local").items()}
    assert now == ref
    assert not list(local.rglob("*.tmp"))
    load_data_dir(out / "test")


# ---------------------------------------------------------------- entry points

@pytest.mark.integration
def test_cli_needs_no_system_espeak(tmp_path):
    """Runs with an empty PATH: only the espeakng-loader wheel's library is used."""
    out = tmp_path / "data"
    env = {**os.environ, "PATH": str(tmp_path / "empty"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "espnet_probe.bin.make_embedded_corpus", "--out", str(out),
         "--utts_per_voice", "1", "--babble_utts", "1", "--nj", "2", "--no_progress"],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"24 voices, 24 utterances \(14 train / 2 dev / 4 test / 4 babble\)",
                     proc.stdout)
    assert len(load_data_dir(out / "test").utt2spk) == 4


def test_cli_rejects_bad_settings(tmp_path, capsys):
    from espnet_probe.bin.make_embedded_corpus import main

    assert main(["--out", str(tmp_path), "--nj", "0"]) == 2
    assert main(["--out", str(tmp_path), "--utts_per_voice", "0"]) == 1
    assert "utts_per_voice" in capsys.readouterr().err


@pytest.mark.integration
def test_local_data_sh(tmp_path):
    out, babble = tmp_path / "data", tmp_path / "noise" / "speech" / "espeak"
    proc = subprocess.run(
        ["bash", "local/data.sh", "--out", str(out), "--seed", "5", "--nj", "2",
         "--utts_per_voice", "1", "--babble_utts", "2", f"--babble_dir={babble}",
         "--python", sys.executable],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "generated" in proc.stdout
    assert len(list(babble.glob("spk2?-000?.wav"))) == 8
    assert not (out / "local" / "noise").exists()
    bad = subprocess.run(["bash", "local/data.sh", "--no_such_flag", "1"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown option --no_such_flag" in bad.stderr
