"""Answers survive a restart of the app (and a killed process), and a rater resumes where they
stopped: with the cookie, or on another device with the resume link."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from espnet_probe.listening.app import COOKIE, create_app
from espnet_probe.listening.store import Store
from tests.conftest import REPO
from tests.listening_support import CSRF_FIELD, TRIAL_FIELD, make_db


def shown_trial(page: str) -> int:
    return int(TRIAL_FIELD.search(page)[1])


def test_restart_keeps_answers_and_resumes(tmp_path):
    db = make_db(tmp_path, per_layer=3)  # 6 trials
    client = create_app(db).test_client()
    page = client.post("/start", data={"name": "Ann"}, follow_redirects=True).get_data(as_text=True)
    token = client.get_cookie(COOKIE).value
    with Store(db) as s:
        rater = s.rater(token)
        order = [t for (t,) in s.conn.execute(
            "SELECT trial FROM issued WHERE rater = ? ORDER BY position", (rater.id,))]
    for k in range(3):
        assert shown_trial(page) == order[k] and f"{k + 1} / 6" in page
        page = client.post("/answer", data={"trial": order[k], "choice": "A", "csrf": rater.csrf},
                           follow_redirects=True).get_data(as_text=True)
    del client  # the app goes away; its connections were closed after each request

    # same browser (cookie), new app on the same database
    client = create_app(db).test_client()
    client.set_cookie(COOKIE, token)
    page = client.get("/", follow_redirects=True).get_data(as_text=True)
    assert shown_trial(page) == order[3] and "4 / 6" in page
    # another device: no cookie, only the resume link
    other = create_app(db).test_client()
    resume = other.get(f"/resume/{token}")
    assert resume.status_code == 200 and "answered 3 of 6" in resume.get_data(as_text=True)
    page = other.get("/trial").get_data(as_text=True)
    assert shown_trial(page) == order[3] and CSRF_FIELD.search(page)[1] == rater.csrf
    with Store(db) as s:
        assert [(r["trial"], r["choice"]) for r in s.answer_rows()] == [(t, "A") for t in order[:3]]


def test_answers_survive_a_killed_process(tmp_path):
    """A process that dies without closing its connection (WAL not checkpointed) loses nothing."""
    db = make_db(tmp_path, per_layer=2)
    script = textwrap.dedent(f"""
        import os
        from espnet_probe.listening.store import Store
        s = Store({str(db)!r})
        r = s.add_rater("Kim")
        nxt = s.next_trial(r.id)
        s.submit_answer(r.id, nxt.trial, "B")
        print(r.token, nxt.trial, flush=True)
        os._exit(0)  # no close, no checkpoint
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    token, trial = out[0], int(out[1])
    assert (db.parent / f"{db.name}-wal").exists()  # the answer lives only in the WAL so far
    with Store(db) as s:
        rater = s.rater(token)
        assert [(r["trial"], r["choice"]) for r in s.answer_rows()] == [(trial, "B")]
        assert s.progress(rater.id) == (1, 4)
        assert s.next_trial(rater.id).position == 2
