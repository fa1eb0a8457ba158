"""LibriSpeech preparation: the real train-clean-5 copy, speaker splits, and download + extract
against a loopback HTTP server (no internet needed); the LibriSpeech egs' stages 1-3."""

from __future__ import annotations

import io
import subprocess
import tarfile
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet_probe.audio.io import load_utterance
from espnet_probe.bin import prepare_librispeech as prep_cli
from espnet_probe.data.librispeech import (LibriSpeechError, _part_sizes, download,
                                           download_subsets, parse_split_spec, prepare,
                                           read_speakers, safe_extract, split_speakers)
from espnet_probe.utils.freshness import Stamp
from espnet_probe.utils.kaldi_dir import load_data_dir
from conftest import egs_recipe
from test_recipe import _check_recipe_outputs

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LIBRI = SHARED / "LibriSpeech"


@pytest.fixture(scope="module")
def libri() -> Path:
    if not (LIBRI / "train-clean-5").is_dir():
        pytest.skip(f"real data not found at {SHARED}")
    return LIBRI


# ----------------------------------------------------------------------------- real data

@pytest.mark.integration
def test_train_clean_5_is_read_whole(libri):
    (s,) = prepare(libri, ["train-clean-5"])
    d = s.data
    assert s.name == "train_clean_5"
    assert len(d.utt2spk) == 574 and len(d.spk2utt) == 20
    spk_gender = {d.utt2spk[u]: g for u, g in d.extra["utt2gender"].items()}
    assert Counter(spk_gender.values()) == {"f": 12, "m": 8}
    assert all(u.startswith(spk + "-") for u, spk in d.utt2spk.items())
    assert all(t == t.upper() and t for t in d.text.values())
    assert all(Path(p).is_absolute() and p.endswith(f"{u}.flac") for u, p in d.wav_scp.items())


@pytest.mark.integration
def test_split_by_speaker_is_disjoint_covers_all_and_loads_at_16k(libri, tmp_path):
    assert prep_cli.main(["--librispeech_dir", str(libri), "--subsets", "train-clean-5",
                          "--split_by_speaker", "train=14,dev=2,test=4", "--seed", "3",
                          "--out", str(tmp_path)]) == 0
    parts = {p: load_data_dir(tmp_path / p, extra_files=("utt2gender",))
             for p in ("train", "dev", "test")}
    spks = {p: set(d.spk2utt) for p, d in parts.items()}
    assert [len(spks[p]) for p in ("train", "dev", "test")] == [14, 2, 4]
    assert not (spks["train"] & spks["dev"] or spks["train"] & spks["test"]
                or spks["dev"] & spks["test"])
    assert sum(len(d.utt2spk) for d in parts.values()) == 574
    # 12 f / 8 m shared out in proportion: test 2+2, dev 1+1, train 9+5
    genders = {p: Counter({d.utt2spk[u]: g for u, g in d.extra["utt2gender"].items()}.values())
               for p, d in parts.items()}
    assert genders == {"train": {"f": 9, "m": 5}, "dev": {"f": 1, "m": 1},
                       "test": {"f": 2, "m": 2}}
    lengths = []
    for d in parts.values():
        for utt in d.utt_ids:
            wav = load_utterance(d, utt)  # raises unless 16 kHz mono and finite
            lengths.append(wav.size)
    assert len(lengths) == 574
    hours = sum(lengths) / 16000 / 3600
    assert 1.9 < hours < 2.1  # README: 1.98 hours


@pytest.mark.integration
def test_split_is_seeded(libri):
    def test_speakers(seed):
        sets = prepare(libri, ["train-clean-5"], split_spec="16,4", names=["tr", "te"], seed=seed,
                       check_audio=False)
        return sorted(sets[1].data.spk2utt)
    assert test_speakers(0) == test_speakers(0)
    assert any(test_speakers(0) != test_speakers(s) for s in (1, 2, 3))


@pytest.mark.integration
def test_max_utts_per_spk(libri):
    (s,) = prepare(libri, ["train-clean-5"], max_utts_per_spk=5, check_audio=False)
    assert len(s.data.spk2utt) == 20
    assert all(len(u) == 5 for u in s.data.spk2utt.values())


@pytest.mark.integration
def test_max_utts_per_spk_can_keep_each_speakers_shortest(libri):
    (random_choice,) = prepare(libri, ["train-clean-5"], max_utts_per_spk=3, check_audio=False)
    (shortest,) = prepare(libri, ["train-clean-5"], max_utts_per_spk=3, check_audio=False,
                          utt_choice="shortest")
    (everything,) = prepare(libri, ["train-clean-5"], check_audio=False)

    def seconds(data, utts):
        return [sf.info(data.wav_scp[u]).frames / 16000 for u in utts]

    assert sorted(shortest.data.spk2utt) == sorted(everything.data.spk2utt)
    for spk, utts in shortest.data.spk2utt.items():
        assert len(utts) == 3
        assert sorted(seconds(shortest.data, utts)) == sorted(
            seconds(everything.data, everything.data.spk2utt[spk]))[:3]
    total = sum(seconds(shortest.data, shortest.data.utt2spk))
    assert total < 0.6 * sum(seconds(random_choice.data, random_choice.data.utt2spk))
    with pytest.raises(ValueError, match="utt_choice must be one of"):
        prepare(libri, ["train-clean-5"], max_utts_per_spk=3, check_audio=False, utt_choice="long")


@pytest.mark.integration
def test_data_sh_on_shared_copy(libri, tmp_path):
    recipe = REPO / "egs" / "librispeech_probe"
    proc = subprocess.run(
        ["bash", "local/data.sh", "--librispeech_dir", str(libri), "--subsets", "train-clean-5",
         "--split_by_speaker", "0.7,0.1,0.2", "--train_set", "tr", "--valid_set", "cv",
         "--test_set", "ev", "--max_utts_per_spk", "3", "--out", str(tmp_path / "data")],
        cwd=recipe, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sizes = {p: len(load_data_dir(tmp_path / "data" / p).spk2utt) for p in ("tr", "cv", "ev")}
    assert sizes == {"tr": 14, "cv": 2, "ev": 4}
    assert len(load_data_dir(tmp_path / "data" / "tr").utt2spk) == 14 * 3


# ----------------------------------------------------------------------------- split logic

def test_split_spec_parsing_and_sizes():
    assert parse_split_spec("train=14,dev=2,test=4") == [("train", "14"), ("dev", "2"),
                                                         ("test", "4")]
    assert parse_split_spec("0.7,0.1,0.2", ["a", "b", "c"]) == [("a", "0.7"), ("b", "0.1"),
                                                                ("c", "0.2")]
    assert _part_sizes([("a", "rest"), ("b", "2"), ("c", "4")], 20) == {"a": 14, "b": 2, "c": 4}
    assert _part_sizes([("a", "0.7"), ("b", "0.1"), ("c", "0.2")], 20) == {"a": 14, "b": 2,
                                                                            "c": 4}
    with pytest.raises(ValueError, match="sum to 19 but the data has 20 speakers"):
        _part_sizes([("a", "13"), ("b", "2"), ("c", "4")], 20)
    with pytest.raises(ValueError, match="leaves a part without speakers"):
        _part_sizes([("a", "0.95"), ("b", "0.05")], 5)
    with pytest.raises(ValueError, match="either every part or none"):
        parse_split_spec("train=3,4")
    with pytest.raises(ValueError, match="has no names"):
        parse_split_spec("3,4")


@pytest.mark.parametrize("n_f, n_m, sizes", [(12, 8, (14, 2, 4)), (7, 3, (5, 5)),
                                             (3, 0, (1, 1, 1)), (5, 6, (1, 9, 1))])
def test_split_speakers_keeps_gender_mix_and_sizes(n_f, n_m, sizes):
    spk2gender = {f"f{i}": "f" for i in range(n_f)} | {f"m{i}": "m" for i in range(n_m)}
    names = [f"p{i}" for i in range(len(sizes))]
    parts = split_speakers(spk2gender, dict(zip(names, sizes)), seed=1)
    all_spk = [s for p in parts.values() for s in p]
    assert sorted(all_spk) == sorted(spk2gender) and len(set(all_spk)) == len(all_spk)
    for name, size in zip(names, sizes):
        assert len(parts[name]) == size
        n_f_part = sum(s.startswith("f") for s in parts[name])
        assert abs(n_f_part - size * n_f / (n_f + n_m)) < 1  # proportional, off by < 1


def test_read_speakers_handles_pipes_in_names(tmp_path):
    p = tmp_path / "SPEAKERS.TXT"
    p.write_text(";ID |SEX| SUBSET |MINUTES| NAME\n60   | M | train-clean-100  | 20.18 | |CBW|S\n"
                 "19 | F | train-clean-100 | 25.19 | Kara\n")
    assert read_speakers(p) == {"60": "m", "19": "f"}
    p.write_text("19 | X | train-clean-100 | 1 | Y\n")
    with pytest.raises(LibriSpeechError, match=r"SPEAKERS\.TXT:1: expected"):
        read_speakers(p)


# ----------------------------------------------------------------------------- download

def build_subset_tar(subset: str, speakers=(("19", "198", "F"), ("26", "495", "M"))) -> bytes:
    """A LibriSpeech-shaped tar.gz: one chapter per (speaker, chapter, sex), 2 utterances each."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        add(tar, "LibriSpeech/SPEAKERS.TXT", (";ID|SEX|SUBSET|MIN|NAME\n" + "".join(
            f"{spk} | {sex} | {subset} | 1 | N{spk}\n" for spk, _, sex in speakers)).encode())
        for spk, ch, _ in speakers:
            lines = []
            for i in range(2):
                flac = io.BytesIO()
                sf.write(flac, (rng.standard_normal(4000) * 0.1).astype(np.float32), 16000,
                         format="FLAC")
                add(tar, f"LibriSpeech/{subset}/{spk}/{ch}/{spk}-{ch}-{i:04d}.flac",
                    flac.getvalue())
                lines.append(f"{spk}-{ch}-{i:04d} HELLO NUMBER {i}\n")
            add(tar, f"LibriSpeech/{subset}/{spk}/{ch}/{spk}-{ch}.trans.txt",
                "".join(lines).encode())
    return buf.getvalue()


class Server:
    """Serves files from memory on 127.0.0.1 with HTTP Range; can drop the first transfer."""

    def __init__(self, files: dict[str, bytes], drop_first_after: int | None = None):
        self.files, self.drop = files, drop_first_after
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server.drop is not None:  # promise everything, send part, hang up
                    cut, server.drop = server.drop, None
                    self.wfile.write(body[start:start + cut])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_resumes_with_range_after_a_dropped_connection(tmp_path):
    body = build_subset_tar("dev-clean")
    with Server({"/res/dev-clean.tar.gz": body}, drop_first_after=len(body) // 3) as srv:
        root = download_subsets(tmp_path / "dl", ["dev-clean"], url_base=srv.url + "/res/",
                                retry_wait=0)
        assert srv.requests == [("/res/dev-clean.tar.gz", None),
                                ("/res/dev-clean.tar.gz", f"bytes={len(body) // 3}-")]
        assert root == tmp_path / "dl" / "LibriSpeech"
        done = Stamp(root / "dev-clean")
        assert done.state({"archive": "dev-clean.tar.gz"}) == "done"
        assert done.summary() == {"url": srv.url + "/res/dev-clean.tar.gz", "bytes": len(body),
                                  "members": 7}
        assert (root / "SPEAKERS.TXT").is_file()
        assert not list((tmp_path / "dl").glob("*.tar.gz*"))  # archive removed after extraction
        assert not list((tmp_path / "dl").glob(".extract.*"))
        # a second run finds the subset complete and asks the server for nothing
        download_subsets(tmp_path / "dl", ["dev-clean"], url_base=srv.url + "/res/")
        assert len(srv.requests) == 2
    (s,) = prepare(root, ["dev-clean"])
    assert s.data.utt_ids == ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001"]
    assert s.data.extra["utt2gender"]["26-495-0001"] == "m"
    assert s.data.text["19-198-0001"] == "HELLO NUMBER 1"


def test_a_subset_marked_complete_by_an_earlier_version_is_checked_once(tmp_path):
    (tmp_path / "dev-clean.tar.gz").write_bytes(build_subset_tar("dev-clean"))
    safe_extract(tmp_path / "dev-clean.tar.gz", tmp_path / "dl")
    root = tmp_path / "dl" / "LibriSpeech"
    (root / "dev-clean" / ".complete").write_text("https://example.org/dev-clean.tar.gz\n")
    (root / "test-clean").mkdir()  # a broken tree under the old marker: downloaded again
    (root / "test-clean" / ".complete").write_text("https://example.org/test-clean.tar.gz\n")
    with Server({"/test-clean.tar.gz": build_subset_tar("test-clean")}) as srv:
        download_subsets(tmp_path / "dl", ["dev-clean", "test-clean"], url_base=srv.url)
        assert [path for path, _ in srv.requests] == ["/test-clean.tar.gz"]
    for subset in ("dev-clean", "test-clean"):
        assert Stamp(root / subset).state({"archive": f"{subset}.tar.gz"}) == "done"
        assert not (root / subset / ".complete").exists()
    assert Stamp(root / "dev-clean").summary() == {"url": "https://example.org/dev-clean.tar.gz"}


def test_download_finishes_a_part_file_that_is_already_whole(tmp_path):
    body = b"x" * 1000
    (tmp_path / "f.bin.part").write_bytes(body)
    with Server({"/f.bin": body}) as srv:
        out = download(srv.url + "/f.bin", tmp_path / "f.bin", retry_wait=0)
        assert srv.requests == [("/f.bin", "bytes=1000-")]
    assert out.read_bytes() == body and not (tmp_path / "f.bin.part").exists()


def test_download_missing_file_is_a_clear_error(tmp_path):
    with Server({}) as srv:
        with pytest.raises(OSError, match=r"test-other\.tar\.gz: HTTP 404"):
            download_subsets(tmp_path, ["test-other"], url_base=srv.url)


@pytest.mark.integration
def test_data_sh_downloads_through_url_base(tmp_path):
    body = build_subset_tar("test-clean", speakers=(("19", "198", "F"), ("26", "495", "M"),
                                                    ("32", "21631", "F")))
    recipe = REPO / "egs" / "librispeech_probe"
    cmd = ["bash", "local/data.sh", "--download_dir", str(tmp_path / "dl"), "--subsets",
           "test-clean", "--train_set", "a", "--valid_set", "b", "--test_set", "c",
           "--out", str(tmp_path / "data")]
    with Server({"/12/test-clean.tar.gz": body}) as srv:
        # two split parts for three set names: downloads, then refuses rather than guessing
        proc = subprocess.run(cmd + ["--url_base", srv.url + "/12", "--split_by_speaker", "2,1"],
                              cwd=recipe, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "has no names" in proc.stderr
        assert len(srv.requests) == 1
        proc = subprocess.run(cmd + ["--url_base", srv.url + "/12", "--split_by_speaker", "1,1,1"],
                              cwd=recipe, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert len(srv.requests) == 1  # subset already stamped done: not fetched again
    got = {p: sorted(load_data_dir(tmp_path / "data" / p).spk2utt) for p in "abc"}
    assert sorted(s for v in got.values() for s in v) == ["19", "26", "32"]
    assert all(len(v) == 1 for v in got.values())


def evil_tar(path: Path, name: str, link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("LibriSpeech/ok.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        if link is None:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        else:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
    return path


@pytest.mark.parametrize("name, link", [("../evil.txt", None), ("/tmp/evil.txt", None),
                                        ("LibriSpeech/../../evil.txt", None),
                                        ("LibriSpeech/l", "../../etc")])
def test_extract_rejects_members_escaping_the_target(tmp_path, name, link):
    archive = evil_tar(tmp_path / "bad.tar.gz", name, link)
    with pytest.raises(LibriSpeechError, match="outside .*refusing to extract"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_truncated_archive_is_reported(tmp_path):
    body = build_subset_tar("dev-clean")
    (tmp_path / "t.tar.gz").write_bytes(body[: len(body) // 2])
    with pytest.raises(LibriSpeechError, match=r"t\.tar\.gz: .*delete it and download again"):
        safe_extract(tmp_path / "t.tar.gz", tmp_path / "out")


# The egs' stages 1-3 here, not in test_recipe.py: that file is the default run's chain of stage
# groups, one pytest-xdist unit; this run is independent of it and goes to whichever worker is free.
@pytest.mark.integration
def test_librispeech_recipe_on_shared_data(tmp_path, recipe_env, librispeech_dir, musan_mini_dir):
    recipe = egs_recipe(tmp_path)
    # a speaker's 2 shortest utterances: the egs' options and stages are under test, not the
    # amount of audio (the shortest are a third as long as random ones; every stage scales with it)
    utts = 2
    proc = subprocess.run(
        ["./run.sh", "--musan_dir", str(musan_mini_dir), "--local_data_opts",
         f"--librispeech_dir {librispeech_dir} --subsets train-clean-5 --split_by_speaker 14,2,4 "
         f"--max_utts_per_spk {utts} --utt_choice shortest", "--stop_stage", "3"],
        cwd=recipe, env=recipe_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_recipe_outputs(recipe, "train", ["test"], snrs=(20, 10, 0))  # the egs: the paper's SNRs
    assert len(load_data_dir(recipe / "data" / "train").utt2spk) == 14 * utts
