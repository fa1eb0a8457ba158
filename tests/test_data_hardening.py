"""Hostile data dirs (issue 16): each bad input gets one line naming the item, or a correct result.

The bad inputs are built here from a generated tone; no audio is committed.
"""

from __future__ import annotations

import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from espnet_probe.audio import io as audio_io
from espnet_probe.audio.io import AudioError, declared_wav_frames, load_audio
from espnet_probe.data.import_dir import (AudioCheckError, import_data_dir, import_recipe_sets,
                                         recipe_test_set_names)
from espnet_probe.utils.kaldi_dir import DataDirError, load_data_dir, read_table
from tests.test_data_validation import good_dir, tone, write_audio, write_files


def wav_bytes(seconds: float = 0.5) -> bytes:
    path = Path("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp") / f"tone_{seconds}.wav"
    sf.write(path, tone(seconds), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.unlink()
    return data


def import_error(src: Path, dst: Path, **kwargs) -> str:
    with pytest.raises((DataDirError, AudioCheckError)) as e:
        import_data_dir(src, dst, **kwargs)
    return str(e.value)


# ----------------------------------------------------------------------------- audio

def test_truncated_wav_file_is_refused_naming_the_utterance(tmp_path):
    full = wav_bytes(0.5)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full[: len(full) // 2])  # header still promises 8000 samples
    msg = import_error(good_dir(tmp_path, {"a-1": str(cut)}), tmp_path / "dst")
    assert "utterance 'a-1'" in msg and str(cut) in msg
    assert "truncated: the WAV header promises 8000 samples" in msg


def test_pipe_that_exits_0_with_a_cut_short_file_is_refused(tmp_path):
    whole = tmp_path / "whole.wav"
    whole.write_bytes(wav_bytes(0.5))
    entry = f"head -c 6000 {whole} |"
    msg = import_error(good_dir(tmp_path, {"a-1": entry}), tmp_path / "dst")
    assert "utterance 'a-1'" in msg and "truncated" in msg and "head -c 6000" in msg


def test_streamed_wav_with_unknown_length_is_accepted(tmp_path):
    """Writers to a pipe put a placeholder length in the header; that is not truncation."""
    data = bytearray(wav_bytes(0.5))
    pos = data.index(b"data")
    data[pos + 4:pos + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    assert declared_wav_frames(bytes(data)) is None
    path = tmp_path / "stream.wav"
    path.write_bytes(bytes(data))
    entry = f"cat {path} |"
    assert load_audio("u", entry).size == 8000


def test_float_audio_at_integer_scale_is_refused(tmp_path):
    path = tmp_path / "int_scale.wav"
    sf.write(path, tone(0.5) * 32768 / 0.31, 16000, subtype="FLOAT")
    msg = import_error(good_dir(tmp_path, {"b-1": str(path)}), tmp_path / "dst")
    assert "utterance 'b-1'" in msg and "16-bit integer scale: divide by 32768" in msg


@pytest.mark.parametrize("seconds", [0.0125, 0.05])
def test_audio_shorter_than_an_utterance_minimum_is_refused_at_import(tmp_path, seconds):
    short = write_audio(tmp_path / "short.wav", seconds=seconds)
    msg = import_error(good_dir(tmp_path, {"a-1": str(short)}), tmp_path / "dst")
    assert "utterance 'a-1'" in msg and "an utterance needs at least 0.1 s" in msg


def test_short_segment_is_refused_naming_the_utterance(tmp_path):
    rec = write_audio(tmp_path / "rec.wav", seconds=1.0)
    src = write_files(tmp_path / "src", wav_scp=f"r1 {rec}\n",
                      segments="a-1 r1 0.0 0.5\na-2 r1 0.5 0.55\n",
                      text="a-1 HI\na-2 HO\n", utt2spk="a-1 a\na-2 a\n", spk2utt="a a-1 a-2\n")
    msg = import_error(src, tmp_path / "dst")
    assert "utterance 'a-2'" in msg and "segment of 0.050 s" in msg


def test_never_ending_pipe_times_out_naming_the_utterance(tmp_path):
    wav = tmp_path / "x.wav"
    wav.write_bytes(wav_bytes(0.5))
    start = time.monotonic()
    with pytest.raises(AudioError, match=r"utterance 'a-1' .*did not finish within 1 s"):
        load_audio("a-1", f"sleep 60; cat {wav} |", timeout=1.0)
    assert time.monotonic() - start < 10  # the whole pipeline was killed, not waited for


def test_import_times_out_a_hanging_pipe(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_io, "PIPE_TIMEOUT_S", 1.0)
    msg = import_error(good_dir(tmp_path, {"a-1": "sleep 60 |"}), tmp_path / "dst")
    assert "utterance 'a-1'" in msg and "did not finish within 1 s" in msg


def test_kaldi_ark_offset_entries_are_read(tmp_path):
    samples = (tone(0.5) * 32767).astype(np.int16)
    ark, scp = tmp_path / "wav.ark", tmp_path / "ark.scp"
    kaldiio.save_ark(str(ark), {"a-1": (16000, samples)}, scp=str(scp))
    entry = scp.read_text().split()[1]
    assert entry.startswith(str(ark) + ":")
    wav = load_audio("a-1", entry)
    np.testing.assert_allclose(wav, samples / 32768.0, atol=1e-7)
    report = import_data_dir(good_dir(tmp_path, {"a-1": entry}), tmp_path / "dst")
    assert report.n_utts == 2


def test_ark_offset_pointing_at_features_is_refused(tmp_path):
    ark, scp = tmp_path / "feats.ark", tmp_path / "feats.scp"
    kaldiio.save_ark(str(ark), {"a-1": np.zeros((10, 80), np.float32)}, scp=str(scp))
    entry = scp.read_text().split()[1]
    with pytest.raises(AudioError, match="a feature matrix here, not audio"):
        load_audio("a-1", entry)


# ----------------------------------------------------------------------------- transcripts

@pytest.mark.parametrize("transcript", ["", "   ", "\t"])
def test_empty_transcript_is_refused_and_fix_drops_it_with_a_list(tmp_path, transcript):
    src = good_dir(tmp_path)
    (src / "text").write_text(f"a-1 HELLO\nb-1 {transcript}\n", encoding="utf-8")
    msg = import_error(src, tmp_path / "dst")
    assert "1 empty transcript(s): 'b-1'" in msg and str(src / "text") in msg
    report = import_data_dir(src, tmp_path / "dst", fix=True)
    assert report.n_utts == 1
    assert any("dropped 1 utterance(s) with an empty transcript: 'b-1'" in c for c in report.changes)
    assert load_data_dir(tmp_path / "dst").utt_ids == ["a-1"]


# ----------------------------------------------------------------------------- encodings

def test_byte_order_mark_is_named_and_fix_removes_it(tmp_path):
    src = good_dir(tmp_path)
    (src / "utt2spk").write_text("\ufeffa-1 a\nb-1 b\n", encoding="utf-8")
    msg = import_error(src, tmp_path / "dst")
    assert f"{src / 'utt2spk'}:1: starts with a byte-order mark" in msg
    report = import_data_dir(src, tmp_path / "dst", fix=True)
    assert report.n_utts == 2, "the BOM must not cost an utterance"
    assert "utt2spk: byte-order mark removed" in report.changes
    assert (tmp_path / "dst" / "utt2spk").read_text() == "a-1 a\nb-1 b\n"


@pytest.mark.parametrize("char, name", [
    ("\u00a0", "U+00A0 NO-BREAK SPACE"),
    ("\u000b", "U+000B control character"),
    ("\u200b", "U+200B ZERO WIDTH SPACE"),
])
def test_invisible_character_in_an_id_is_named_and_fix_refuses_to_guess(tmp_path, char, name):
    src = good_dir(tmp_path)
    (src / "text").write_text(f"a-1 HELLO\nb-1{char} WORLD\n", encoding="utf-8")
    for fix in (False, True):
        msg = import_error(src, tmp_path / "dst", fix=fix)
        assert f"{src / 'text'}:2:" in msg and name in msg, msg
    assert not (tmp_path / "dst").exists()


def test_ids_split_like_kaldi_on_space_and_tab_only(tmp_path):
    path = tmp_path / "text"
    path.write_text("u1\tHELLO  THERE \nu2 A\u00a0B\n", encoding="utf-8")
    assert read_table(path) == {"u1": "HELLO  THERE", "u2": "A\u00a0B"}


def test_fix_lists_every_dropped_utterance(tmp_path):
    audio = {f"a-{i}": str(write_audio(tmp_path / "audio" / f"a-{i}.wav", seed=i)) for i in range(4)}
    src = write_files(tmp_path / "src",
                      wav_scp="".join(f"{u} {p}\n" for u, p in audio.items()),
                      text="a-0 A\na-1 B\na-2 C\na-3 D\n", utt2spk="a-0 a\na-3 a\n")
    report = import_data_dir(src, tmp_path / "dst", fix=True)
    assert report.n_utts == 2
    dropped = [c for c in report.changes if "dropped" in c]
    assert dropped and all("2 utterance(s)" in c and "'a-1', 'a-2'" in c for c in dropped)


# ----------------------------------------------------------------------------- set names

def recipe_dirs(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for i, name in enumerate(names):
        d = good_dir(tmp_path / f"corpus{i}")
        target = tmp_path / "sets" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        d.rename(target)
        out.append(target)
    return out


def test_two_test_dirs_with_one_basename_are_refused(tmp_path):
    a, b = good_dir(tmp_path / "x"), good_dir(tmp_path / "y")  # both .../src
    with pytest.raises(DataDirError, match=r"'.*y/src' would be data/src, the name of test dir"):
        recipe_test_set_names(f"{a} {b}", train_set="train", valid_set="dev", snrs=["0"])


@pytest.mark.parametrize("name, taken", [
    ("train", "the training set"), ("dev", "the validation set"),
    ("train_robust", "the robust training set"), ("train_aug", "the noisy training copy"),
])
def test_test_dir_named_like_another_set_is_refused(tmp_path, name, taken):
    (d,) = recipe_dirs(tmp_path, name)
    with pytest.raises(DataDirError, match=f"would be data/{name}, the name of {taken}"):
        recipe_test_set_names(str(d), train_set="train", valid_set="dev", snrs=["0"])


def test_test_dir_named_like_a_noisy_copy_is_refused(tmp_path):
    a, b = recipe_dirs(tmp_path, "test", "test_snr0")
    with pytest.raises(DataDirError, match=r"data/test_snr0 would be both the 0 dB copy of"):
        recipe_test_set_names(f"{a} {b}", train_set="train", valid_set="dev", snrs=["20", "0"])


def test_a_path_with_a_space_gets_a_clear_error(tmp_path):
    (d,) = recipe_dirs(tmp_path, "my test")
    with pytest.raises(DataDirError, match=r"'.*/my': data directory not found; '.*my test' "
                                           r"exists, but --test_dirs is split at spaces"):
        recipe_test_set_names(str(d), train_set="train", valid_set="dev", snrs=[])


def test_recipe_import_keeps_every_set(tmp_path):
    train, dev, t1, t2 = recipe_dirs(tmp_path, "tr", "dv", "clean_a", "clean_b")
    reports = import_recipe_sets(tmp_path / "data", train_dir=str(train), valid_dir=str(dev),
                                 test_dirs=f"{t1} {t2}", train_set="train", valid_set="dev",
                                 snrs=["0"])
    assert sorted(reports) == ["clean_a", "clean_b", "dev", "train"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(reports)


def test_run_sh_refuses_a_colliding_test_dir_before_any_work(tmp_path):
    """The recipe's own entry point, not just the library: exit 1, one line, nothing written."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    train, dev, test = recipe_dirs(tmp_path, "tr", "dv", "train")
    out = subprocess.run(
        [str(root / "run.sh"), "--stage", "1", "--stop_stage", "1", "--train_dir", str(train),
         "--valid_dir", str(dev), "--test_dirs", str(test), "--datadir", str(tmp_path / "data"),
         "--dumpdir", str(tmp_path / "dump"), "--expdir", str(tmp_path / "exp")],
        capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "the name of the training set" in errors[0], out.stderr
    assert not (tmp_path / "data" / "train").exists()


# ----------------------------------------------------------------------------- console errors

def test_check_split_prints_one_line_not_a_traceback(tmp_path, capsys):
    from espnet_probe.bin import check_split

    train, dev, test = recipe_dirs(tmp_path, "train", "dev", "test")
    (test / "utt2spk").write_text("a-1 a\nb-1 b\n")
    (test / "spk2utt").write_text("a a-1\nb b-1\n")  # shares speakers a, b with train
    assert check_split.main(["--data", str(tmp_path / "sets"), "--train", "train",
                             "--valid", "dev", "--test", "test"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("check_split: error: ") and "Traceback" not in err[0]


def test_failed_feature_job_names_the_utterance_on_the_console(tmp_path):
    """Stage 3's jobs: the runner prints the job's error line, not only 'see log'."""
    import subprocess
    import sys

    short = write_audio(tmp_path / "short.wav", seconds=0.02)
    data = good_dir(tmp_path, {"b-1": str(short)})  # not imported: as a local/data.sh could make
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "espnet_probe.bin.run_jobs", "JOB=1:1", str(tmp_path / "log.JOB"),
         sys.executable, "-m", "espnet_probe.bin.make_features", "--data_dir", str(data),
         "--out_dir", str(tmp_path / "feats"), "--config", str(root / "conf" / "fbank.yaml"),
         "--nj", "1", "--job", "JOB"],
        capture_output=True, text=True, cwd=root)
    assert out.returncode != 0
    first = out.stderr.splitlines()[0]
    assert "make_features: error: utterance 'b-1'" in first and "at least 0.1 s" in first, out.stderr
    assert str(tmp_path / "log.1") in first


# ----------------------------------------------------------------------------- killed writers

def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    import signal
    import subprocess
    import sys

    from espnet_probe.utils.fileio import atomic_open

    target = tmp_path / "scores.csv"
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom espnet_probe.utils.fileio import atomic_open\n"
         f"with atomic_open({str(target)!r}) as f:\n"
         "    print('open', flush=True, file=sys.stderr)\n    time.sleep(60)\n"],
        stderr=subprocess.PIPE, text=True)
    assert writer.stderr.readline().strip() == "open"
    leftovers = list(tmp_path.glob(".scores.csv.*.tmp"))
    assert len(leftovers) == 1
    with atomic_open(target) as f:  # the writer is still alive: its file is left alone
        f.write("a\n")
    assert leftovers[0].exists()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    with atomic_open(target) as f:
        f.write("b\n")
    assert not list(tmp_path.glob(".scores.csv.*.tmp"))
    assert target.read_text() == "b\n"


# ----------------------------------------------------------------------------- freshness

def run_script(args: list[str], cwd: Path) -> str:
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PATH=f"{root / 'tools' / 'venv' / 'bin'}:{os.environ['PATH']}",
               PYTHONPATH=str(root))
    out = subprocess.run([str(root / args[0]), *args[1:]], capture_output=True, text=True,
                         cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_audio_replaced_in_place_redoes_features_and_noisy_copies(tmp_path, monkeypatch):
    """Stages 2 and 3 see a changed audio file although wav.scp's text is the same."""
    from espnet_probe.data.synth_noise import make_synthetic_noise

    root = Path(__file__).resolve().parents[1]
    work = tmp_path / "recipe"
    src = good_dir(work)
    (work / "data").mkdir()
    src.rename(work / "data" / "test")
    noise = work / "noise"
    make_synthetic_noise(noise, seed=0, seconds=2.0, n_music=1)  # in-process: short and quick
    augment = ["local/augment.sh", "--musan_dir", str(noise), "--train_set", "",
               "--test_sets", "test", "--snrs", "0", "--types", "noise", "--nj", "1",
               "--config", str(root / "conf" / "augment.yaml")]
    features = ["local/make_features.sh", "--nj", "1", "--config", str(root / "conf" / "fbank.yaml"),
                "--sets", "test"]  # the clean set's features are what is checked
    run_script(augment, work)
    run_script(features, work)
    monkeypatch.chdir(work)  # the scp's ark paths are relative to the recipe dir
    feats = work / "dump" / "fbank" / "test" / "feats.scp"
    noisy_wav = work / "dump" / "audio"
    before = {p: p.read_bytes() for p in noisy_wav.rglob("*.wav")}
    mat_before = kaldiio.load_scp(str(feats))["a-1"].copy()

    assert "skipping" in run_script(augment, work)          # nothing changed: nothing redone
    assert "already complete" in run_script(features, work)

    audio = Path(load_data_dir(work / "data" / "test").wav_scp["a-1"])
    time.sleep(0.01)
    sf.write(audio, tone(0.5, seed=7) * 2.5, 16000)         # same path, new content
    log = run_script(augment, work)
    assert "skipping" not in log
    log = run_script(features, work)
    assert "features of test: already complete" not in log
    mat_after = kaldiio.load_scp(str(feats))["a-1"]
    assert not np.allclose(mat_before, mat_after)
    after = {p: p.read_bytes() for p in noisy_wav.rglob("*.wav")}
    assert any(before.get(p) != data for p, data in after.items())


def test_fingerprint_follows_audio_arks_and_configs_not_unrelated_files(tmp_path, monkeypatch):
    from espnet_probe.utils.freshness import fingerprint

    monkeypatch.chdir(tmp_path)
    data = good_dir(tmp_path)
    feats = tmp_path / "feats"
    feats.mkdir()
    kaldiio.save_ark("feats/feats.1.ark", {"a-1": np.zeros((10, 3), np.float32)},
                     scp="feats/feats.scp")
    config = tmp_path / "fbank.yaml"
    config.write_text("n_mels: 80\n")
    base = fingerprint(data, feats, config)
    assert fingerprint(data, feats, config) == base
    (data / "notes.txt").write_text("unrelated")           # not an input of any stage
    (feats / "log").mkdir()
    (feats / "log" / "fbank.1.log").write_text("log")
    assert fingerprint(data, feats, config) == base

    changes = {
        "audio replaced in place": lambda: sf.write(
            load_data_dir(data).wav_scp["a-1"], tone(0.5, seed=3), 16000),
        "ark rewritten": lambda: kaldiio.save_ark(
            "feats/feats.1.ark", {"a-1": np.ones((10, 3), np.float32)}),
        "config edited": lambda: config.write_text("n_mels: 40\n"),
        "transcript edited": lambda: (data / "text").write_text("a-1 HELLO\nb-1 WORLDS\n"),
    }
    for what, change in changes.items():
        time.sleep(0.01)
        change()
        new = fingerprint(data, feats, config)
        assert new != base, what
        base = new


def test_fingerprint_sees_files_inside_pipes_and_arks(tmp_path):
    from espnet_probe.utils.freshness import audio_files

    wav = write_audio(tmp_path / "x.wav")
    assert audio_files(f"sox {wav} -t wav - |") == [wav]
    assert audio_files(f"{tmp_path}/a.ark:123") == [tmp_path / "a.ark"]
    assert audio_files(str(wav)) == [wav]


def test_a_linked_test_dir_is_named_by_its_link(tmp_path):
    """The README's advice for a path with a space: the link's name is the set's name."""
    (d,) = recipe_dirs(tmp_path, "my test")
    link = tmp_path / "my_test"
    link.symlink_to(d)
    assert recipe_test_set_names(str(link), train_set="train", valid_set="dev",
                                 snrs=[]) == ["my_test"]
