"""Bad input fails loudly, naming the file or utterance; a good dir with pipes + segments loads."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet_probe.audio.io import AudioError, load_audio, load_utterance
from espnet_probe.bin import import_data_dir as import_cli
from espnet_probe.data.import_dir import AudioCheckError, import_data_dir
from espnet_probe.data.librispeech import LibriSpeechError, read_subset
from espnet_probe.utils.kaldi_dir import DataDirError, load_data_dir


def tone(seconds: float = 0.5, sr: int = 16000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (0.3 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


def write_audio(path: Path, seconds: float = 0.5, sr: int = 16000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr, seed), sr)
    return path


def write_files(d: Path, **tables: str) -> Path:
    """Write data-dir files verbatim (``wav_scp`` -> wav.scp); order is kept as given."""
    d.mkdir(parents=True, exist_ok=True)
    for name, content in tables.items():
        (d / name.replace("_scp", ".scp")).write_text(content, encoding="utf-8")
    return d


def good_dir(tmp_path: Path, entries: dict[str, str] | None = None) -> Path:
    """Two speakers, one utterance each, with FLAC files; ``entries`` overrides wav.scp values."""
    audio = {u: str(write_audio(tmp_path / "audio" / f"{u}.flac", seed=i))
             for i, u in enumerate(["a-1", "b-1"])}
    audio.update(entries or {})
    return write_files(
        tmp_path / "src",
        wav_scp="".join(f"{u} {e}\n" for u, e in sorted(audio.items())),
        text="a-1 HELLO\nb-1 WORLD\n",
        utt2spk="a-1 a\nb-1 b\n",
        spk2utt="a a-1\nb b-1\n",
    )


# ----------------------------------------------------------------------------- audio problems

@pytest.mark.parametrize("kind, reason", [
    ("corrupt", "corrupt or unsupported audio"),
    ("empty", "file is empty"),
    ("8k", "sample rate is 8000 Hz"),
])
def test_bad_audio_file_is_reported_with_utterance_and_file(tmp_path, kind, reason):
    bad = tmp_path / "audio" / "bad.flac"
    bad.parent.mkdir(parents=True)
    if kind == "corrupt":
        bad.write_bytes(np.random.default_rng(1).bytes(4000))
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        write_audio(bad, sr=8000)
    with pytest.raises(AudioError, match=reason) as e:
        load_audio("b-1", str(bad))
    assert e.value.utt == "b-1" and str(bad) in str(e.value)

    src = good_dir(tmp_path, {"b-1": str(bad)})
    with pytest.raises(AudioCheckError) as e:
        import_data_dir(src, tmp_path / "data" / "x")
    msg = str(e.value)
    assert "1 problem(s)" in msg and "'b-1'" in msg and str(bad) in msg and reason in msg
    assert "'a-1'" not in msg  # the good utterance is not blamed
    assert not (tmp_path / "data" / "x").exists()  # nothing half-imported


def test_all_audio_problems_are_collected_and_the_first_ten_shown(tmp_path):
    entries = {}
    for i in range(12):
        p = tmp_path / "audio" / f"c{i:02d}.flac"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not a flac at all" * 10)
        entries[f"c-{i:02d}"] = str(p)
    lines = sorted(entries.items())
    src = write_files(tmp_path / "src",
                      wav_scp="".join(f"{u} {p}\n" for u, p in lines),
                      text="".join(f"{u} X\n" for u, _ in lines),
                      utt2spk="".join(f"{u} c\n" for u, _ in lines),
                      spk2utt="c " + " ".join(u for u, _ in lines) + "\n")
    with pytest.raises(AudioCheckError) as e:
        import_data_dir(src, tmp_path / "dst", nj=2)
    msg = str(e.value)
    assert "12 problem(s)" in msg and "and 2 more" in msg
    assert "'c-00'" in msg and "'c-09'" in msg and "'c-10'" not in msg


def test_failing_pipe_is_reported_with_utterance(tmp_path):
    src = good_dir(tmp_path, {"b-1": "sh -c 'echo no such recorder >&2; exit 3' |"})
    with pytest.raises(AudioCheckError, match=r"'b-1'.*exit code 3: no such recorder"):
        import_data_dir(src, tmp_path / "dst")
    with pytest.raises(AudioError, match="exit code 3"):
        load_utterance(load_data_dir(src), "b-1")


def test_missing_audio_file_is_reported(tmp_path):
    src = good_dir(tmp_path, {"a-1": str(tmp_path / "nowhere.flac")})
    with pytest.raises(AudioCheckError, match=r"'a-1'.*nowhere\.flac.*file not found"):
        import_data_dir(src, tmp_path / "dst")


# ----------------------------------------------------------------------------- table problems

def test_duplicate_utterance_id_names_file_and_line(tmp_path):
    src = good_dir(tmp_path)
    (src / "text").write_text("a-1 HELLO\na-1 AGAIN\nb-1 WORLD\n")
    with pytest.raises(DataDirError, match=r"text:2: duplicate id 'a-1'"):
        load_data_dir(src)
    for fix in (False, True):  # --fix cannot guess which copy is right
        with pytest.raises(DataDirError, match="duplicate id 'a-1'"):
            import_data_dir(src, tmp_path / "dst", fix=fix)


def test_unsorted_dir_is_an_error_and_fix_sorts_it(tmp_path):
    src = good_dir(tmp_path)
    (src / "utt2spk").write_text("b-1 b\na-1 a\n")
    with pytest.raises(DataDirError, match=r"utt2spk: not sorted: 'a-1' comes after 'b-1'") as e:
        import_data_dir(src, tmp_path / "dst")
    assert "--fix" in str(e.value)
    rep = import_data_dir(src, tmp_path / "dst", fix=True)
    assert "utt2spk: sorted" in rep.changes
    assert (tmp_path / "dst" / "utt2spk").read_text() == "a-1 a\nb-1 b\n"
    assert load_data_dir(tmp_path / "dst").utt_ids == ["a-1", "b-1"]


def test_utt2spk_text_mismatch_names_both_files_and_an_id(tmp_path):
    src = good_dir(tmp_path)
    (src / "text").write_text("a-1 HELLO\nc-1 STRAY\n")
    with pytest.raises(DataDirError) as e:
        import_data_dir(src, tmp_path / "dst")
    msg = str(e.value)
    assert "utt2spk but not in text (e.g. 'b-1')" in msg
    assert "in text but not in utt2spk (e.g. 'c-1')" in msg
    # --fix keeps only utterances present everywhere and says so
    rep = import_data_dir(src, tmp_path / "dst", fix=True)
    assert any(c.startswith("text: dropped 1") for c in rep.changes)
    assert any(c.startswith("utt2spk: dropped 1") for c in rep.changes)
    assert "spk2utt: regenerated from utt2spk" in rep.changes
    fixed = load_data_dir(tmp_path / "dst")
    assert fixed.utt_ids == ["a-1"] and list(fixed.wav_scp) == ["a-1"]


def test_segments_with_unknown_recording(tmp_path):
    rec = write_audio(tmp_path / "rec1.flac", seconds=2.0)
    src = write_files(tmp_path / "src", wav_scp=f"rec1 {rec}\n",
                      segments="u-1 rec1 0.0 1.0\nu-2 rec9 0.5 1.5\n",
                      text="u-1 A\nu-2 B\n", utt2spk="u-1 u\nu-2 u\n", spk2utt="u u-1 u-2\n")
    with pytest.raises(DataDirError, match=r"segments: 'u-2' names recording 'rec9' that is not "
                                           r"in .*wav\.scp"):
        import_data_dir(src, tmp_path / "dst")
    rep = import_data_dir(src, tmp_path / "dst", fix=True)
    assert any("recording is not in wav.scp: 'u-2'" in c for c in rep.changes)
    assert load_data_dir(tmp_path / "dst").utt_ids == ["u-1"]


def test_segment_past_the_recording_end_is_reported(tmp_path):
    rec = write_audio(tmp_path / "rec1.flac", seconds=1.0)
    src = write_files(tmp_path / "src", wav_scp=f"rec1 {rec}\n",
                      segments="u-1 rec1 0.0 0.9\nu-2 rec1 3.0 4.0\n",
                      text="u-1 A\nu-2 B\n", utt2spk="u-1 u\nu-2 u\n", spk2utt="u u-1 u-2\n")
    with pytest.raises(AudioCheckError, match=r"'u-2'.*starts at 3\.00 s, after the recording "
                                              r"ends \(1\.00 s\)"):
        import_data_dir(src, tmp_path / "dst")


def test_missing_spk2utt_needs_fix(tmp_path):
    src = good_dir(tmp_path)
    (src / "spk2utt").unlink()
    with pytest.raises(DataDirError, match=r"spk2utt: file not found.*--fix"):
        import_data_dir(src, tmp_path / "dst")
    rep = import_data_dir(src, tmp_path / "dst", fix=True)
    assert rep.changes == ["spk2utt: created from utt2spk"]
    assert (tmp_path / "dst" / "spk2utt").read_text() == "a a-1\nb b-1\n"


# ----------------------------------------------------------------------------- LibriSpeech tree

def make_chapter(root: Path, spk: str, chapter: str, n: int) -> Path:
    d = root / spk / chapter
    for i in range(n):
        write_audio(d / f"{spk}-{chapter}-{i:04d}.flac", seconds=0.2, seed=i)
    (d / f"{spk}-{chapter}.trans.txt").write_text(
        "".join(f"{spk}-{chapter}-{i:04d} WORD {i}\n" for i in range(n)))
    return d


def test_transcript_line_without_audio_names_line_and_file(tmp_path):
    d = make_chapter(tmp_path / "dev-clean", "19", "198", 3)
    (d / "19-198-0001.flac").unlink()
    with pytest.raises(LibriSpeechError) as e:
        read_subset(tmp_path / "dev-clean")
    msg = str(e.value)
    assert "1 problem(s)" in msg
    assert f"{d / '19-198.trans.txt'}:2: '19-198-0001' has no audio file" in msg


def test_audio_without_transcript_line_and_bad_flac_are_all_reported(tmp_path):
    d = make_chapter(tmp_path / "dev-clean", "19", "198", 3)
    write_audio(d / "19-198-0007.flac", seconds=0.2)  # no transcript line
    (d / "19-198-0002.flac").write_bytes(b"\0" * 100)  # corrupt
    write_audio(d / "19-198-0000.flac", sr=8000)  # wrong rate
    with pytest.raises(LibriSpeechError) as e:
        read_subset(tmp_path / "dev-clean")
    msg = str(e.value)
    assert "3 problem(s)" in msg
    assert f"{d / '19-198-0007.flac'}: no transcript line for '19-198-0007'" in msg
    assert f"{d / '19-198-0002.flac'}: corrupt" in msg
    assert f"{d / '19-198-0000.flac'}: sample rate is 8000 Hz" in msg


def test_misnamed_utterance_in_transcript(tmp_path):
    d = make_chapter(tmp_path / "dev-clean", "19", "198", 2)
    (d / "19-198.trans.txt").write_text("19-198-0000 A\n19-999-0001 B\n")
    with pytest.raises(LibriSpeechError, match=r"trans\.txt:2: utterance id '19-999-0001' does "
                                               r"not match '19-198-NNNN'"):
        read_subset(tmp_path / "dev-clean")


# ----------------------------------------------------------------------------- good input

def test_good_dir_with_pipes_and_segments_loads_and_imports(tmp_path):
    rec1 = write_audio(tmp_path / "r1.wav", seconds=3.0, seed=1)
    rec2 = write_audio(tmp_path / "r2.flac", seconds=2.0, seed=2)
    py = sys.executable
    pipe = f"{py} -c \"import sys; sys.stdout.buffer.write(open('{rec1}','rb').read())\" |"
    src = write_files(
        tmp_path / "src",
        wav_scp=f"r1 {pipe}\nr2 {rec2}\n",
        segments="s-r1-a r1 0.0 1.0\ns-r1-b r1 1.5 3.2\ns-r2-a r2 0.25 1.75\n",
        text="s-r1-a ONE\ns-r1-b TWO\ns-r2-a THREE\n",
        utt2spk="s-r1-a s\ns-r1-b s\ns-r2-a s\n",
        spk2utt="s s-r1-a s-r1-b s-r2-a\n",
        utt2gender="s-r1-a f\ns-r1-b f\ns-r2-a f\n",
    )
    (src / "feats.scp").write_text("s-r1-a x.ark:10\n")
    data = load_data_dir(src, extra_files=("utt2gender",))
    assert len(load_utterance(data, "s-r1-a")) == 16000
    assert len(load_utterance(data, "s-r1-b")) == 24000  # 0.2 s overshoot is cut at the end
    wav2 = load_utterance(data, "s-r2-a")
    assert np.allclose(wav2, sf.read(rec2, dtype="float32")[0][4000:28000], atol=1e-4)

    rep = import_data_dir(src, tmp_path / "data" / "imp", nj=2)
    assert (rep.n_utts, rep.n_spk, rep.n_recordings) == (3, 1, 2)
    assert rep.audio_seconds == pytest.approx(1.0 + 1.5 + 1.5)
    assert rep.ignored_files == ["feats.scp"]
    dst = tmp_path / "data" / "imp"
    for name in ("wav.scp", "segments", "text", "utt2spk", "spk2utt", "utt2gender"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()  # copied verbatim
    assert not (dst / "feats.scp").exists()


def test_cli_reports_error_and_success(tmp_path, capsys):
    src = good_dir(tmp_path)
    assert import_cli.main(["--src", str(src), "--dst", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "2 utterances, 2 speakers" in out and "audio checked" in out
    (src / "text").write_text("b-1 WORLD\na-1 HELLO\n")
    assert import_cli.main(["--src", str(src), "--dst", str(tmp_path / "bad")]) == 1
    assert "text: not sorted" in capsys.readouterr().err
    assert import_cli.main(["--src", str(src), "--dst", str(tmp_path / "bad"), "--fix",
                            "--no-check_audio"]) == 0
    cap = capsys.readouterr()
    assert "fixed: text: sorted" in cap.err and "audio not checked" in cap.out


def test_crlf_and_non_utf8_tables(tmp_path):
    src = good_dir(tmp_path)
    (src / "text").write_bytes(b"a-1 HELLO\r\nb-1 WORLD\r\n")
    with pytest.raises(DataDirError, match=r"CRLF\) line endings in text.*--fix"):
        import_data_dir(src, tmp_path / "dst")
    rep = import_data_dir(src, tmp_path / "dst", fix=True)
    assert rep.changes == ["text: CRLF line endings rewritten"]
    assert (tmp_path / "dst" / "text").read_bytes() == b"a-1 HELLO\nb-1 WORLD\n"
    (src / "text").write_bytes(b"a-1 HELLO\nb-1 W\xf6RLD\n")  # latin-1
    with pytest.raises(DataDirError, match=r"text:2: not UTF-8 text"):
        import_data_dir(src, tmp_path / "dst2", fix=True)


def test_fix_mode_errors_name_the_source_dir(tmp_path):
    rec = write_audio(tmp_path / "rec1.flac", seconds=2.0)
    src = write_files(tmp_path / "src", wav_scp=f"rec1 {rec}\n",
                      segments="u-1 rec1 1.5 1.0\n",  # start after end: --fix cannot repair
                      text="u-1 A\n", utt2spk="u-1 u\n", spk2utt="u u-1\n")
    with pytest.raises(DataDirError) as e:
        import_data_dir(src, tmp_path / "dst", fix=True)
    assert f"{src / 'segments'}: 'u-1' has start 1.5 >= end 1.0" in str(e.value)
    with pytest.raises(DataDirError) as e:
        import_data_dir(src, tmp_path / "dst")
    assert "--fix" not in str(e.value)
