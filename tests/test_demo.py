"""The static demo page, on a small probe experiment tree whose names need HTML escaping."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import kaldiio
import numpy as np
from matplotlib.image import imread

from espnet_probe.audio.io import write_wav
from espnet_probe.bin import make_demo
from espnet_probe.experiments import load, plan, write_plan
from tests.conftest import REPO
from tests.summary_support import write_decode_summary

SPEAKERS = ("a&b", "c<d>")          # speaker ids that must be escaped on the page
UTTS = [f"{s}-{k}" for s in SPEAKERS for k in (1, 2)]
SETS = ("test", "test_snr0")
LAYERS = ("input", "deep<&>")       # a layer name that must be escaped too
EXPS = ("probe_t&y_baseline", "probe_t&y_robust")


def _tone(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(4800) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t)
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _decode_dir(decode: Path, layers, seed: int) -> None:
    """<layer>/{mel.ark,mel.scp,wav/,wav.scp}: mels rising with frequency, 31 frames each."""
    for layer in layers:
        d = decode / layer
        (d / "wav").mkdir(parents=True)
        ramp = np.tile(np.linspace(-10.0, 2.0, 80, dtype=np.float32), (31, 1))
        with kaldiio.WriteHelper(f"ark,scp:{d / 'mel.ark'},{d / 'mel.scp'}") as w:
            for utt in UTTS:
                w(utt, ramp)
        for k, utt in enumerate(UTTS):
            write_wav(d / "wav" / f"{utt}.wav", _tone(seed + k))
        (d / "wav.scp").write_text("".join(f"{u} {d / 'wav' / f'{u}.wav'}\n" for u in UTTS))
    write_decode_summary(decode, layers)
    (decode / "vocoded_utts").write_text("".join(f"{u}\n" for u in UTTS))


def make_tree(root: Path) -> tuple[Path, Path]:
    exp, data = root / "exp", root / "data"
    # the run's plan names the experiments the page shows (and its oracle)
    write_plan(exp, plan(exp, ["t&y.yaml"], ["baseline", "robust"], controls=False,
                         test_sets=["test"], noisy_sets=["test_snr0"]))
    for set_name in SETS:
        d = data / set_name
        d.mkdir(parents=True)
        for k, utt in enumerate(UTTS):
            write_wav(root / "audio" / set_name / f"{utt}.wav", _tone(k))
        (d / "wav.scp").write_text("".join(f"{u} {root / 'audio' / set_name / f'{u}.wav'}\n"
                                           for u in UTTS))
        (d / "utt2spk").write_text("".join(f"{u} {u.rsplit('-', 1)[0]}\n" for u in UTTS))
        (d / "text").write_text("".join(f"{u} SAY <{u}> & GO\n" for u in UTTS))
        for name in EXPS:
            _decode_dir(exp / name / f"decode_{set_name}", LAYERS, 10)
        _decode_dir(exp / "probe_oracle" / f"decode_{set_name}", ("original",), 20)
    return exp, data


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []   # (tag, url)
        self.ids: set[str] = set()
        self.text: list[str] = []
        self.tables = 0
        self.header_utts: list[list[str]] = []   # per table, the utterance of each column
        self.row_names: list[list[str]] = []     # per table, the name of each row
        self._pending = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self.tables += 1
            self.header_utts.append([])
            self.row_names.append([])
        if tag in ("img", "audio") and "src" in a:
            self.links.append((tag, a["src"]))
        if tag == "a":
            self.links.append((tag, a["href"]))
        if tag == "audio":
            assert a.get("preload") == "none" and "controls" in a
        if tag == "th" and a.get("class") == "utt":
            self._pending = self.header_utts[-1]  # its first text is the utterance id
        if tag == "th" and a.get("class") == "layer":
            self._pending = self.row_names[-1]

    def handle_data(self, data):
        self.text.append(data)
        if self._pending is not None:
            self._pending.append(data.strip())
            self._pending = None


def build(exp, data, out, *extra):
    return make_demo.main(["--exp_root", str(exp), "--data", str(data), "--out", str(out),
                           "--utts_per_table", "2", "--fbank_config",
                           str(REPO / "conf" / "fbank.yaml"), *extra])


def test_demo_page_links_escaping_and_atomic_rerun(tmp_path, capsys):
    exp, data = make_tree(tmp_path)
    out = exp / "demo"
    assert build(exp, data, out) == 0
    source = (out / "index.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(source)

    # 2 experiments x 2 conditions; rows: original, oracle, then the layers in encoder order
    assert page.tables == 4
    text = " ".join(page.text)
    assert "deep<&>" in text and "t&y / baseline / snr0" in text and "speaker c<d>" in text
    assert "deep<&>" not in source and "t&y" not in source and "<q>SAY <" not in source
    assert all(rows == ["original audio", "oracle (Griffin-Lim of input mel)", *LAYERS]
               for rows in page.row_names)
    # one utterance per speaker, the same in every table
    first = page.header_utts[0]
    assert len(first) == 2 and {u.rsplit("-", 1)[0] for u in first} == set(SPEAKERS)
    assert all(h == first for h in page.header_utts)

    # every link resolves from index.html: 4 tables x 4 rows x 2 utterances of img and audio
    media = [(tag, url) for tag, url in page.links if tag != "a"]
    assert len(media) == 2 * 4 * 4 * 2
    for tag, url in page.links:
        if tag == "a":
            assert url.startswith("#") and url[1:] in page.ids
        else:
            assert (out / unquote(url)).is_file(), url
    # vocoded wavs are hard-linked (same filesystem); images are mel-sized, low bins at the bottom
    layer_wav = next(out / unquote(u) for t, u in media if t == "audio" and "deep" in unquote(u))
    utt = layer_wav.stem
    src = exp / EXPS[0] / "decode_test" / "deep<&>" / "wav" / f"{utt}.wav"
    assert os.stat(layer_wav).st_ino == os.stat(src).st_ino
    img = imread(next(out / unquote(u) for t, u in media if t == "img"))
    assert img.shape[0] == 80 and img[-1, :, :3].sum() < img[0, :, :3].sum()

    # a chosen utterance missing in one layer: a clear error, the previous demo untouched
    (out / "marker").write_text("previous run")
    missing = exp / EXPS[1] / "decode_test_snr0" / "deep<&>" / "wav" / f"{utt}.wav"
    missing.unlink()
    capsys.readouterr()
    assert build(exp, data, out) == 1
    err = capsys.readouterr().err
    assert f"decode_test_snr0/deep<&>/{utt}" in err and str(missing) in err
    assert (out / "index.html").read_text(encoding="utf-8") == source
    assert (out / "marker").is_file()
    assert sorted(p.name for p in exp.iterdir() if "demo" in p.name) == ["demo"]
    assert load(out).kind == "demo"  # the demo's record stays with its dir

    # a successful re-run replaces the directory whole
    write_wav(missing, _tone(3))
    assert build(exp, data, out, "--seed", "1", "--sets", "test") == 0
    assert not (out / "marker").exists()
    again = Page()
    again.feed((out / "index.html").read_text(encoding="utf-8"))
    assert again.tables == 2
    assert all((out / unquote(u)).is_file() for t, u in again.links if t != "a")
