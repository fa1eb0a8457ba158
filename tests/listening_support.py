"""Helpers of the listening-test tests: a tiny synthetic probe experiment, a test database, a
waitress server on a free loopback port in a thread, and a scripted rater over real HTTP."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
import soundfile as sf

from espnet_probe.listening.app import create_app, make_server
from espnet_probe.listening.store import build_db
from espnet_probe.listening.triplets import build_test
from summary_support import write_decode_summary

TRIAL_FIELD = re.compile(r'name="trial" value="(\d+)"')
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def make_experiment(root: Path, exp_name: str = "probe_toy_baseline", speakers=("s1", "s2", "s3"),
                    utts_per_speaker: int = 4, layers=("input", "deep"), sets=("test",)) -> Path:
    """``root/exp/<exp_name>/decode_<set>/<layer>/wav/*.wav`` (0.1 s of tone per utterance) with
    wav.scp and summary.json, and ``root/data/<set>/utt2spk``; returns ``root/exp``."""
    rng = np.random.default_rng(0)
    exp = root / "exp" / exp_name
    for set_name in sets:
        utts = [(f"{spk}-{i:02d}", spk) for spk in speakers for i in range(utts_per_speaker)]
        data = root / "data" / set_name
        data.mkdir(parents=True, exist_ok=True)
        (data / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utts))
        decode = exp / f"decode_{set_name}"
        decode.mkdir(parents=True, exist_ok=True)
        write_decode_summary(decode, layers)
        for layer in layers:
            wav_dir = decode / layer / "wav"
            wav_dir.mkdir(parents=True, exist_ok=True)
            lines = []
            for utt, _ in utts:
                tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * np.arange(1600) / 16000)
                sf.write(wav_dir / f"{utt}.wav", tone.astype(np.float32), 16000, subtype="PCM_16")
                lines.append(f"{utt} {wav_dir / f'{utt}.wav'}\n")
            (decode / layer / "wav.scp").write_text("".join(lines))
    return root / "exp"


def make_db(root: Path, per_layer: int = 3, seed: int = 0, **experiment) -> Path:
    exp_root = make_experiment(root, **experiment)
    exps = sorted(p for p in exp_root.iterdir() if p.name.startswith("probe_"))
    triplets = build_test(exps, root / "data", ["test"], None, per_layer, seed)
    db = root / "listening" / "listening.db"
    build_db(db, triplets, exp_root, seed)
    return db


@contextlib.contextmanager
def serving(db: Path):
    """Yield the base URL of the app on a free 127.0.0.1 port; stop the server on exit."""
    server = make_server(create_app(db), "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # waitress has no public stop: close every channel from inside its loop thread (the
        # trigger runs the callback there), so the loop ends when none is left
        def close_all():
            for channel in list(server._map.values()):
                channel.handle_close()

        logging.getLogger("waitress").setLevel(logging.CRITICAL)
        server.trigger.pull_trigger(close_all)
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()
        assert not thread.is_alive(), "waitress did not stop"


class HttpRater:
    """A rater driving the app over real HTTP, cookies kept in a jar."""

    def __init__(self, base: str, timeout: float = 30):
        self.base, self.timeout = base, timeout
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def request(self, path: str, form: dict | None = None) -> tuple[int, str]:
        data = None if form is None else urllib.parse.urlencode(form).encode()
        try:
            with self.opener.open(self.base + path, data=data, timeout=self.timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def start(self, name: str) -> str:
        status, page = self.request("/start", {"name": name})
        assert status == 200, page
        return page

    def answer(self, page: str, choice: str) -> str:
        """Answer the trial shown on ``page``; returns the page that follows."""
        trial, csrf = TRIAL_FIELD.search(page)[1], CSRF_FIELD.search(page)[1]
        status, nxt = self.request("/answer", {"trial": trial, "csrf": csrf, "choice": choice})
        assert status == 200, nxt
        return nxt
