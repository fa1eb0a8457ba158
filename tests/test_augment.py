"""MUSAN-style augmentation of data dirs, fixed-SNR test sets and synthetic noise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from espnet_probe.audio.io import load_audio, load_utterance
from espnet_probe.audio.mix import MixError, snr_db
from espnet_probe.bin import augment_data_dir as augment_cli
from espnet_probe.bin import make_noisy_set as noisy_cli
from espnet_probe.bin import make_synthetic_noise as make_noise_cli
from espnet_probe.data.augment import (TYPE_FOLDER, AugmentConfigError, Augmenter, MusanError,
                                       NoiseBank, NoiseInfo, augment_data_dir, describe_noise,
                                       list_musan, load_config, make_noisy_set)
from espnet_probe.data.babble import make_babble_voices, read_file2spk
from espnet_probe.data.synth_noise import NOISE_KINDS, make_synthetic_noise
from espnet_probe.utils.kaldi_dir import KaldiDataDir, load_data_dir, write_data_dir

from conftest import LIBRISPEECH, MUSAN_MINI, REPO, need

LIBRI = LIBRISPEECH / "train-clean-5"
MUSAN = MUSAN_MINI
CONFIG = REPO / "conf" / "augment.yaml"
LSB = 1 / 32768


def write_wav16(path: Path, wav: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, 16000, subtype="PCM_16")


def libri_by_speaker() -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for f in sorted(LIBRI.rglob("*.flac")):
        out.setdefault(f.stem.split("-")[0], []).append(f)
    return out


def make_src(path: Path, flacs: list[Path], loud_wav_dir: Path | None = None) -> Path:
    """A data dir over real LibriSpeech utterances; optionally re-written at peak 0.98."""
    data = KaldiDataDir(wav_scp={}, utt2spk={}, text={})
    for f in flacs:
        utt = f.stem
        entry = str(f)
        if loud_wav_dir is not None:
            wav = sf.read(f, dtype="float32")[0]
            entry = str(loud_wav_dir / f"{utt}.wav")
            write_wav16(Path(entry), wav * (0.98 / np.max(np.abs(wav))))
        data.wav_scp[utt] = entry
        data.utt2spk[utt] = utt.split("-")[0]
        data.text[utt] = f"TEXT OF {utt}"
    write_data_dir(path, data)
    return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    """Source data dirs: 6 utterances of 3 speakers, as is and loudened to peak 0.98."""
    need(LIBRI)
    root = tmp_path_factory.mktemp("speech")
    spk = libri_by_speaker()
    flacs = [f for s in sorted(spk)[:3] for f in spk[s][:2]]
    return {"src": make_src(root / "train", flacs),
            "loud": make_src(root / "loud", flacs, loud_wav_dir=root / "loud_wav")}


@pytest.fixture(scope="module")
def synth_musan(tmp_path_factory) -> Path:
    """Synthetic noise/music plus a speech/ folder of LibriSpeech talkers not in ``speech``."""
    need(LIBRI)
    root = tmp_path_factory.mktemp("synth_musan")
    make_synthetic_noise(root, seed=0, seconds=8.0, n_music=2)
    spk = libri_by_speaker()
    for s in sorted(spk)[-7:]:
        wav = sf.read(spk[s][0], dtype="float32")[0]
        write_wav16(root / "speech" / "talkers" / f"{s}.wav", wav)
    return root


@pytest.fixture
def all_types_config(tmp_path) -> Path:
    """The shipped config, but 3 copies per utterance, so every type occurs for every utt."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["copies"] = 3
    path = tmp_path / "augment3.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def check_noisy_dir(dst: Path, src: Path, musan: Path, cfg_path: Path, *,
                    snr: float | None = None) -> dict[str, NoiseInfo]:
    """Everything a noisy data dir promises, checked against its clean source."""
    cfg = load_config(cfg_path)
    noisy = load_data_dir(dst, extra_files=("utt2clean", "noise_info"))
    clean = load_data_dir(src)
    assert set(noisy.extra) == {"utt2clean", "noise_info"}
    aug = Augmenter(musan, tuple(TYPE_FOLDER), babble_speakers=cfg.types["babble"].speakers,
                    peak_limit=cfg.peak_limit)
    infos = {}
    for utt in noisy.utt_ids:
        cu = noisy.extra["utt2clean"][utt]
        info = NoiseInfo.parse(noisy.extra["noise_info"][utt])
        infos[utt] = info
        assert utt == (cu if snr is not None else f"{cu}-{info.type}")
        assert noisy.utt2spk[utt] == clean.utt2spk[cu]
        assert noisy.text[utt] == clean.text[cu]
        folder = TYPE_FOLDER[info.type]
        assert all(rel.startswith(folder + "/") and (musan / rel).is_file()
                   for rel, _ in info.files)
        if info.type == "babble":
            lo, hi = cfg.types["babble"].speakers
            assert lo <= len(info.files) <= hi
            assert len({rel for rel, _ in info.files}) == len(info.files)
        else:
            assert len(info.files) == 1
        if snr is None:
            lo, hi = cfg.types[info.type].snr
            assert lo <= info.snr <= hi
        else:
            assert info.snr == snr

        mixture = load_utterance(noisy, utt).astype(np.float64)
        speech = load_utterance(clean, cu).astype(np.float64)
        assert mixture.size == speech.size
        assert np.max(np.abs(mixture)) <= cfg.peak_limit + LSB
        # measured on the file: the speech in it is gain * clean, the rest is noise
        measured = snr_db(info.gain * speech, mixture - info.gain * speech)
        assert measured == pytest.approx(info.snr, abs=0.1), (utt, info)
        # noise_info says exactly what happened: the mixture can be rebuilt from it
        rebuilt = aug.rebuild(speech.astype(np.float32), info)
        assert rebuilt.gain == pytest.approx(info.gain, abs=2e-6)
        assert np.max(np.abs(rebuilt.mixture - mixture)) <= 1.5 * LSB
    return infos


# ----------------------------------------------------------------------------- units

def test_list_musan_layout_and_errors(tmp_path):
    with pytest.raises(MusanError, match="MUSAN directory not found"):
        list_musan(tmp_path / "nope")
    root = tmp_path / "m"
    for rel in ("noise/b/x.wav", "noise/a.wav", "music/deep/er/m.WAV", "speech/s.wav"):
        write_wav16(root / rel, 0.1 * np.ones(100))
    (root / "noise" / "readme.txt").write_text("not audio")
    assert list_musan(root) == {"noise": ["noise/a.wav", "noise/b/x.wav"],
                                "music": ["music/deep/er/m.WAV"], "speech": ["speech/s.wav"]}
    shutil.rmtree(root / "music")
    with pytest.raises(MusanError, match=r"music: folder not found"):
        list_musan(root)
    assert list(list_musan(root, ("noise",))) == ["noise"]  # only what is asked for
    (root / "music").mkdir()
    (root / "music" / "notes.txt").write_text("x")
    with pytest.raises(MusanError, match=r"music: no \.wav files"):
        list_musan(root)


def test_wrong_rate_or_channels_names_the_file(tmp_path):
    root = tmp_path / "m"
    write_wav16(root / "noise" / "ok.wav", 0.1 * np.ones(1000))
    sf.write(root / "noise" / "fast.wav", 0.1 * np.ones(1000), 8000, subtype="PCM_16")
    with pytest.raises(MusanError, match=r"noise/fast\.wav: sample rate is 8000 Hz"):
        Augmenter(root, ("noise",))
    # the same check where the audio is actually read (load_audio)
    bank = NoiseBank(root, {"noise/fast.wav": 1000})
    with pytest.raises(MusanError, match=r"noise/fast\.wav: sample rate is 8000 Hz"):
        bank.read("noise/fast.wav", 0, 100)
    (root / "noise" / "fast.wav").unlink()
    sf.write(root / "noise" / "stereo.wav", 0.1 * np.ones((1000, 2)), 16000)
    with pytest.raises(MusanError, match=r"noise/stereo\.wav: 2 channels"):
        Augmenter(root, ("noise",))


def test_noise_bank_caches_and_reads_segments(tmp_path):
    root = tmp_path / "m"
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, 16000)
    write_wav16(root / "noise" / "n.wav", wav)
    q = sf.read(root / "noise" / "n.wav", dtype="float32")[0]
    bank = NoiseBank(root, {"noise/n.wav": 16000})
    assert np.array_equal(bank.read("noise/n.wav", 100, 50), q[100:150])
    assert np.array_equal(bank.read("noise/n.wav", 15990, 30), np.r_[q[15990:], q[:20]])
    assert bank.loads == 1  # read from disk once, then from memory
    # a file too big for the cache is read segment by segment
    big = NoiseBank(root, {"noise/n.wav": 16000}, cache_mb=1, max_file_mb=0.01)
    assert np.array_equal(big.read("noise/n.wav", 100, 50), q[100:150])
    assert np.array_equal(big.read("noise/n.wav", 200, 50), q[200:250])
    assert big.loads == 2 and not big._cache


def test_config_paper_values_and_errors(tmp_path):
    cfg = load_config(CONFIG)
    assert cfg.types["noise"].snr == (0.0, 15.0)
    assert cfg.types["music"].snr == (5.0, 15.0)
    assert cfg.types["babble"].snr == (13.0, 20.0)
    assert cfg.types["babble"].speakers == (3, 7)
    assert cfg.copies == 1 and cfg.peak_limit == 0.99
    bad = tmp_path / "bad.yaml"
    for text, msg in [("types: {noise: {snr: [0, 15]}}\ncopies: 2", "'copies' must be"),
                      ("types: {hail: {snr: [0, 15]}}", "unknown noise type 'hail'"),
                      ("types: {babble: {snr: [13, 20]}}", "needs 'speakers"),
                      ("types: {music: {snr: [15, 5]}}", "low 15.0 > high 5.0"),
                      ("types: {music: {snr: 5}}", "must be a \\[low, high\\] pair")]:
        bad.write_text(text)
        with pytest.raises(AugmentConfigError, match=msg) as e:
            load_config(bad)
        assert str(bad) in str(e.value)


def test_noise_info_round_trip():
    info = NoiseInfo("babble", 15.27, [("speech/a b.wav", 12345), ("speech/x,@y.wav", 0)], 0.8731)
    line = info.format()
    assert " " not in line.split("files=")[1].split(" gain=")[0]
    back = NoiseInfo.parse(line)
    assert back.files == info.files and back.type == "babble"
    assert back.snr == 15.27 and back.gain == pytest.approx(0.8731)
    assert NoiseInfo("noise", 7.314, [("noise/a.wav", 5)]).format() == \
        "type=noise snr=7.31 files=noise/a.wav@5 gain=1.000000"


# ----------------------------------------------------------------------------- data dirs

def test_augment_musan_mini_every_type(speech, all_types_config, tmp_path):
    need(MUSAN)
    dst = tmp_path / "data" / "train_aug"
    s = augment_data_dir(speech["src"], dst, MUSAN, tmp_path / "wav", load_config(all_types_config))
    assert s.n_src == 6 and s.n_out == 18 and s.per_type == {"noise": 6, "music": 6, "babble": 6}
    infos = check_noisy_dir(dst, speech["src"], MUSAN, all_types_config)
    assert {i.type for i in infos.values()} == {"noise", "music", "babble"}
    # ids sort with their speaker, and wavs live under <wav_dir>/<spk>/
    noisy = load_data_dir(dst)
    assert list(noisy.spk2utt) == sorted(load_data_dir(speech["src"]).spk2utt)
    assert all(Path(p).parent.name == noisy.utt2spk[u] for u, p in noisy.wav_scp.items())


def test_augment_seeded_independent_of_nj(speech, tmp_path):
    need(MUSAN)
    cfg = load_config(CONFIG)
    runs = {}
    for name, seed, nj in [("a", 0, 1), ("b", 0, 2), ("c", 1, 1)]:
        augment_data_dir(speech["src"], tmp_path / name, MUSAN, tmp_path / f"wav_{name}", cfg,
                         seed=seed, nj=nj)
        runs[name] = load_data_dir(tmp_path / name, extra_files=("noise_info", "utt2clean"))
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert a.extra == b.extra and a.utt2spk == b.utt2spk
    for utt in a.utt_ids:
        assert Path(a.wav_scp[utt]).read_bytes() == Path(b.wav_scp[utt]).read_bytes()
    assert a.extra["noise_info"] != c.extra["noise_info"]
    check_noisy_dir(tmp_path / "a", speech["src"], MUSAN, CONFIG)


def test_fixed_snr_sets_with_clipping_gain(speech, tmp_path):
    need(MUSAN)
    cfg = load_config(CONFIG)
    infos = {}
    for snr in (20.0, 0.0):
        dst = tmp_path / f"test_snr{snr:g}"
        make_noisy_set(speech["loud"], dst, MUSAN, tmp_path / f"wav{snr:g}", snr, cfg, seed=3)
        infos[snr] = check_noisy_dir(dst, speech["loud"], MUSAN, CONFIG, snr=snr)
        noisy = load_data_dir(dst, extra_files=("utt2clean",))
        assert noisy.utt_ids == load_data_dir(speech["loud"]).utt_ids
        assert all(u == c for u, c in noisy.extra["utt2clean"].items())
    # loud speech at 0 dB needs the anti-clipping gain; the SNR checks above still held
    assert any(i.gain < 1.0 for i in infos[0.0].values())
    # one seed: every SNR level uses the same noise, only its level differs
    for utt, info in infos[0.0].items():
        assert (info.type, info.files) == (infos[20.0][utt].type, infos[20.0][utt].files)
    # restricted types
    dst = tmp_path / "noise_only"
    make_noisy_set(speech["src"], dst, MUSAN, tmp_path / "wav_n", 10, cfg, types=("noise",))
    only = check_noisy_dir(dst, speech["src"], MUSAN, CONFIG, snr=10.0)
    assert {i.type for i in only.values()} == {"noise"}


def test_synthetic_musan_every_type(speech, synth_musan, all_types_config, tmp_path):
    dst = tmp_path / "aug"
    augment_data_dir(speech["src"], dst, synth_musan, tmp_path / "wav",
                     load_config(all_types_config), seed=5, nj=2)
    infos = check_noisy_dir(dst, speech["src"], synth_musan, all_types_config)
    assert {i.type for i in infos.values()} == {"noise", "music", "babble"}
    # some utterances outlast the 8 s noises, so the checks above covered looped noise too
    lengths = [sf.info(p).frames for p in load_data_dir(dst).wav_scp.values()]
    assert max(lengths) > 8 * 16000


def _voice_like(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A stand-in for speech when no real data is around: a gliding harmonic tone switched
    on and off at a syllable rate."""
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None)
    return 0.1 * voiced * syllables


def test_end_to_end_without_real_data(tmp_path, all_types_config):
    """Synthetic noise, stand-in speech: runs wherever ../shared/data is absent too."""
    rng = np.random.default_rng(0)
    musan = tmp_path / "musan"
    make_synthetic_noise(musan, seed=0, seconds=2.0, n_music=1)
    for i in range(7):
        write_wav16(musan / "speech" / "espeak" / f"v{i}.wav", _voice_like(rng, 1.5))
    data = KaldiDataDir(wav_scp={}, utt2spk={}, text={})
    for spk in ("a", "b"):
        for j in range(2):
            utt = f"{spk}-{j}"
            data.wav_scp[utt] = str(tmp_path / "wav" / f"{utt}.wav")
            write_wav16(Path(data.wav_scp[utt]), _voice_like(rng, 2.5 + j))
            data.utt2spk[utt], data.text[utt] = spk, "WORDS"
    write_data_dir(tmp_path / "train", data)
    augment_data_dir(tmp_path / "train", tmp_path / "aug", musan, tmp_path / "noisy",
                     load_config(all_types_config), nj=2)
    infos = check_noisy_dir(tmp_path / "aug", tmp_path / "train", musan, all_types_config)
    assert len(infos) == 12  # 4 utterances x 3 types; noises (2 s) shorter: looped
    make_noisy_set(tmp_path / "train", tmp_path / "t0", musan, tmp_path / "n0", 0.0,
                   load_config(CONFIG))
    check_noisy_dir(tmp_path / "t0", tmp_path / "train", musan, CONFIG, snr=0.0)


def test_babble_needs_enough_talkers(synth_musan, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(synth_musan, root)
    for f in sorted((root / "speech").rglob("*.wav"))[4:]:
        f.unlink()
    with pytest.raises(MusanError, match="babble needs up to 7 different speakers but only 4 can be"):
        Augmenter(root, ("babble",), babble_speakers=(3, 7))
    Augmenter(root, ("babble",), babble_speakers=(2, 4))  # enough for fewer talkers


def test_babble_from_the_training_speakers_never_holds_the_own_voice(all_types_config, tmp_path, capsys):
    """A user without MUSAN: babble voices made from the training set itself (one file per
    speaker, file2spk), mixed so that no utterance hears its own speaker among the talkers."""
    need(LIBRI)
    spk = libri_by_speaker()
    src = make_src(tmp_path / "data" / "train", [f for s in sorted(spk)[:8] for f in spk[s][:2]])
    noise = tmp_path / "noise"
    assert make_noise_cli.main(["--out", str(noise), "--seconds", "8", "--n_music", "2",
                                "--babble_from", str(src)]) == 0
    assert "babble voices of 8 speakers" in capsys.readouterr().out
    voices = noise / "speech" / "from_training"
    file2spk = read_file2spk(noise / "speech")
    assert sorted(file2spk.values()) == sorted(spk)[:8]
    assert all(rel == f"speech/from_training/{s}.wav" and (noise / rel).is_file()
               for rel, s in file2spk.items())
    # each voice is its speaker's own utterances end to end
    first = sf.read(voices / f"{sorted(spk)[0]}.wav")[0]
    assert len(first) == sum(len(sf.read(f)[0]) for f in spk[sorted(spk)[0]][:2])
    mtime = (voices / "file2spk").stat().st_mtime_ns  # made once for the same training data
    make_babble_voices(src, voices)
    assert (voices / "file2spk").stat().st_mtime_ns == mtime

    dst = tmp_path / "data" / "train_aug"
    summary = augment_data_dir(src, dst, noise, tmp_path / "wav", load_config(all_types_config))
    assert summary.per_type["babble"] == 16
    infos = check_noisy_dir(dst, src, noise, all_types_config)  # exact SNR, rebuilt from noise_info
    noisy = load_data_dir(dst)
    for utt, info in infos.items():
        if info.type == "babble":
            talkers = [file2spk[rel] for rel, _ in info.files]
            assert noisy.utt2spk[utt] not in talkers and len(set(talkers)) == len(talkers), info
    assert "babble from speech/from_training (8 files: voices of 8 training speakers, never an " \
           "utterance's own)" in describe_noise(noise)
    # a noise dir with speech of its own keeps it: no voices are made from the training set
    musan = tmp_path / "musan"
    write_wav16(musan / "speech" / "talkers" / "a.wav", np.zeros(16000))
    assert make_noise_cli.main(["--out", str(musan), "--seconds", "2", "--n_music", "1",
                                "--babble_from", str(src)]) == 0
    assert not (musan / "speech" / "from_training").exists()


def test_silent_noise_or_speech_is_a_clear_error(speech, tmp_path):
    root = tmp_path / "m"
    write_wav16(root / "noise" / "quiet.wav", np.zeros(32000))
    with pytest.raises(MixError, match=r"utterance '.*' \(.*\): .*all gave silent segments.*"
                                       r"noise/quiet\.wav@"):
        make_noisy_set(speech["src"], tmp_path / "d", root, tmp_path / "w", 10,
                       load_config(CONFIG), types=("noise",))
    write_wav16(root / "noise" / "quiet.wav", 0.1 * np.random.default_rng(0).standard_normal(32000))
    clean = load_data_dir(speech["src"])
    silent = tmp_path / "silent.wav"
    write_wav16(silent, np.zeros(16000))
    victim = clean.utt_ids[1]
    clean.wav_scp[victim] = str(silent)
    write_data_dir(tmp_path / "src", clean)
    with pytest.raises(MixError, match=rf"utterance '{victim}' \({silent}\): speech is silent"):
        make_noisy_set(tmp_path / "src", tmp_path / "d", root, tmp_path / "w", 10,
                       load_config(CONFIG), types=("noise",))
    assert not (tmp_path / "d").exists()  # nothing half-made


def test_synthetic_noise_files(tmp_path):
    (tmp_path / "a" / "speech" / "espeak").mkdir(parents=True)
    keep = tmp_path / "a" / "speech" / "espeak" / "v.wav"
    keep.write_bytes(b"someone else's")
    make_synthetic_noise(tmp_path / "a", seed=0, seconds=3.0, n_music=2)
    make_synthetic_noise(tmp_path / "b", seed=0, seconds=3.0, n_music=2)
    make_synthetic_noise(tmp_path / "c", seed=1, seconds=3.0, n_music=2)
    assert keep.read_bytes() == b"someone else's"
    listing = list_musan(tmp_path / "a", ("noise", "music"))
    assert listing["noise"] == sorted(f"noise/synthetic/{k}.wav" for k in NOISE_KINDS)
    assert listing["music"] == ["music/synthetic/piece01.wav", "music/synthetic/piece02.wav"]
    spectra = {}
    for rel in listing["noise"] + listing["music"]:
        info = sf.info(tmp_path / "a" / rel)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 48000)
        wav = load_audio(rel, str(tmp_path / "a" / rel))
        assert 0.01 < np.sqrt(np.mean(wav ** 2)) and np.max(np.abs(wav)) < 1.0
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
        assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes()
        power = np.abs(np.fft.rfft(wav)) ** 2
        f = np.fft.rfftfreq(wav.size, 1 / 16000)
        spectra[Path(rel).stem] = [power[(f >= lo) & (f < 2 * lo)].mean() for lo in (200, 3200)]
    # colour: white is flat, pink falls ~3 dB/octave (12 dB over 4 octaves), brown ~6 dB/octave
    tilt = {k: 10 * np.log10(v[0] / v[1]) for k, v in spectra.items()}
    assert abs(tilt["white"]) < 1.5
    assert 9 < tilt["pink"] < 15
    assert 21 < tilt["brown"] < 27


def test_cli_entry_points(speech, synth_musan, tmp_path, capsys):
    dst = tmp_path / "train_aug"
    assert augment_cli.main(["--src", str(speech["src"]), "--dst", str(dst),
                             "--musan_dir", str(synth_musan), "--wav_dir", str(tmp_path / "w"),
                             "--config", str(CONFIG), "--nj", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("augment_data_dir: 6 utterances -> 6 noisy")
    # a bad input fails with a one-line error naming the file, also from worker processes
    bad = load_data_dir(speech["src"])
    bad.wav_scp[bad.utt_ids[3]] = str(tmp_path / "missing.flac")
    write_data_dir(tmp_path / "bad", bad)
    assert noisy_cli.main(["--src", str(tmp_path / "bad"), "--dst", str(tmp_path / "t"),
                           "--snr", "10", "--musan_dir", str(synth_musan), "--config", str(CONFIG),
                           "--wav_dir", str(tmp_path / "w2"), "--nj", "2"]) == 1
    err = capsys.readouterr().err
    assert f"utterance '{bad.utt_ids[3]}' ({tmp_path / 'missing.flac'}): file not found" in err
    assert not (tmp_path / "t").exists()
    with pytest.raises(SystemExit):
        noisy_cli.main(["--src", str(speech["src"]), "--dst", str(tmp_path / "t"),
                        "--snr", "10", "--musan_dir", str(synth_musan),
                        "--wav_dir", str(tmp_path / "w2"), "--types", "noise,rain"])
    assert "--types must be" in capsys.readouterr().err


# ----------------------------------------------------------------------------- stage script

@pytest.mark.integration
def test_augment_sh_stages_skip_and_redo(speech, synth_musan, tmp_path):
    spk = libri_by_speaker()
    data = tmp_path / "data"
    shutil.copytree(speech["src"], data / "train")
    make_src(data / "test", [spk[sorted(spk)[5]][0], spk[sorted(spk)[6]][0]])
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    args = ["bash", str(REPO / "local" / "augment.sh"), "--musan_dir", str(synth_musan),
            "--data", str(data), "--audio_dir", str(tmp_path / "dump" / "audio"),
            "--config", str(CONFIG), "--snrs", "10 0", "--nj", "1"]

    def run(*extra):
        p = subprocess.run(args + list(extra), cwd=tmp_path, env=env, capture_output=True,
                           text=True)
        assert p.returncode == 0, p.stderr
        return p.stderr

    err = run()
    sets = ["train_aug", "test_snr10", "test_snr0"]
    assert err.count("making") == 3
    for name in sets:
        assert (data / name / ".done").is_file()
    check_noisy_dir(data / "train_aug", data / "train", synth_musan, CONFIG)
    check_noisy_dir(data / "test_snr0", data / "test", synth_musan, CONFIG, snr=0.0)
    stamp = {n: (data / n / "wav.scp").stat().st_mtime_ns for n in sets}

    err = run()  # everything complete: nothing redone
    assert err.count("skipping") == 3 and "making" not in err
    assert stamp == {n: (data / n / "wav.scp").stat().st_mtime_ns for n in sets}

    # a partial set (no .done, stray wav) is redone cleanly; the others stay
    (data / "test_snr10" / ".done").unlink()
    stray = tmp_path / "dump" / "audio" / "test_snr10" / "stray.wav"
    stray.write_bytes(b"junk")
    err = run("--cmd", f"{sys.executable} -m espnet_probe.bin.run_jobs")
    assert err.count("making") == 1 and err.count("skipping") == 2
    assert not stray.exists() and (data / "test_snr10" / ".done").is_file()
    check_noisy_dir(data / "test_snr10", data / "test", synth_musan, CONFIG, snr=10.0)

    # other settings (seed) make every set again
    err = run("--seed", "7", "--test_sets", "")
    assert err.count("making") == 1 and "seed=7" in (data / "train_aug" / ".done").read_text()
