"""The listening-test app refuses what it must: files outside the database, forged, foreign and
replayed answers, answers without the rater's CSRF token; and it escapes what raters type."""

from __future__ import annotations

import http.client
import sqlite3

import pytest

from espnet_probe.listening.app import COOKIE, create_app
from espnet_probe.listening.store import Store
from tests.listening_support import CSRF_FIELD, TRIAL_FIELD, make_db, serving

SECRET = "top secret outside the experiment"


@pytest.fixture
def db(tmp_path):
    db = make_db(tmp_path, per_layer=2)
    # a file beside the experiment root that no request may ever reach
    (tmp_path / "secret.txt").write_text(SECRET)
    return db


@pytest.fixture
def client(db):
    return create_app(db).test_client()


def n_answers(db) -> int:
    with Store(db) as s:
        return s.n_answers()


def start(client, name="Ann"):
    resp = client.post("/start", data={"name": name}, follow_redirects=True)
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    return page, int(TRIAL_FIELD.search(page)[1]), CSRF_FIELD.search(page)[1]


TRAVERSALS = [
    "/audio/../../etc/passwd", "/audio/..%2F..%2Fetc%2Fpasswd", "/audio/%2e%2e/%2e%2e/etc/passwd",
    "/audio/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/audio/..%252F..%252Fetc%252Fpasswd",
    "/audio/1/../../../etc/passwd", "/audio//etc/passwd", "/audio/%2Fetc%2Fpasswd",
    "/audio/..\\..\\etc\\passwd", "/audio/1%00", "/audio/-1", "/audio/0", "/audio/99999",
    "/audio/1.0", "/audio/0x1", "/audio/secret.txt", "/audio/../secret.txt",
    "/audio/%2e%2e%2fsecret.txt", "/audio?path=/etc/passwd", "/audio/", "/audio/" + "9" * 30,
    "/audio/%C2%B2", "/audio/1%20",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_audio_traversal_via_test_client(client, path):
    resp = client.get(path)
    body = resp.get_data()
    assert resp.status_code in (404, 405), (path, resp.status_code)
    assert b"root:" not in body and SECRET.encode() not in body


def test_audio_traversal_over_raw_http(db):
    """Raw request lines, not normalised by any client library, against the real server."""
    def get(port, path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, body

    with serving(db) as base:
        port = int(base.rsplit(":", 1)[1])
        status, body = get(port, "/audio/1")  # the harness reaches real files
        assert status == 200 and body[:4] == b"RIFF"
        for path in TRAVERSALS:
            status, body = get(port, path)
            assert status in (400, 404, 405), (path, status)
            assert b"root:" not in body and SECRET.encode() not in body


def test_audio_serves_only_stored_stimuli(db, client, tmp_path):
    with Store(db) as s:
        stim_id, path = s.conn.execute("SELECT id, path FROM stimuli ORDER BY id LIMIT 1").fetchone()
        n_stimuli = s.conn.execute("SELECT count(*) FROM stimuli").fetchone()[0]
    resp = client.get(f"/audio/{stim_id}")
    assert resp.status_code == 200 and resp.mimetype == "audio/wav"
    assert resp.get_data() == open(path, "rb").read()
    # the file name (utterance and speaker id) must not reach the rater
    assert "s1-" not in resp.headers.get("Content-Disposition", "") + resp.headers.get("ETag", "")
    assert client.get(f"/audio/{n_stimuli + 1}").status_code == 404
    # a database edited to point outside the experiment root is not followed either
    conn = sqlite3.connect(db)
    conn.execute("UPDATE stimuli SET path = ? WHERE id = ?", (str(tmp_path / "secret.txt"), stim_id))
    conn.commit()
    conn.close()
    resp = client.get(f"/audio/{stim_id}")
    assert resp.status_code == 404 and SECRET.encode() not in resp.get_data()


def test_cookie_flags_and_headers(client):
    resp = client.post("/start", data={"name": "Ann"})
    assert resp.status_code == 303
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = client.get("/trial")
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none'
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"


def test_answer_needs_rater_and_csrf(db, client):
    _, trial, csrf = start(client)
    other = create_app(db).test_client()
    _, _, other_csrf = start(other, "Bob")
    forms = [{"trial": trial, "choice": "A"},                        # no token
             {"trial": trial, "choice": "A", "csrf": ""},
             {"trial": trial, "choice": "A", "csrf": csrf[:-1] + "x"},  # wrong token
             {"trial": trial, "choice": "A", "csrf": other_csrf}]       # another rater's token
    for form in forms:
        resp = client.post("/answer", data=form)
        assert resp.status_code == 403 and "form token" in resp.get_data(as_text=True)
    anonymous = create_app(db).test_client()
    assert anonymous.post("/answer", data={"trial": trial, "choice": "A", "csrf": csrf}).status_code == 403
    assert n_answers(db) == 0


def test_forged_foreign_and_replayed_answers(db, client):
    _, trial, csrf = start(client)
    with Store(db) as s:
        rater = s.rater(client.get_cookie(COOKIE).value)
        foreign = max(t for t in range(1, s.n_trials() + 1) if t != trial)
    for forged, status in (("99999", 403), ("0", 403), ("-1", 400), ("1 OR 1=1", 400), ("", 400),
                           ("9" * 30, 400), ("\u00b2", 400), ("\u0661", 400)):
        resp = client.post("/answer", data={"trial": forged, "choice": "A", "csrf": csrf})
        assert resp.status_code == status, forged
    resp = client.post("/answer", data={"trial": trial, "choice": "C", "csrf": csrf})
    assert resp.status_code == 400 and "A or B" in resp.get_data(as_text=True)
    # a trial that was issued to other raters but not to this one
    other = create_app(db).test_client()
    start(other, "Bob")
    with Store(db) as s:
        s.conn.execute("DELETE FROM issued WHERE rater = ? AND trial = ?", (rater.id, foreign))
    resp = client.post("/answer", data={"trial": foreign, "choice": "A", "csrf": csrf})
    assert resp.status_code == 403 and "not issued" in resp.get_data(as_text=True)
    assert n_answers(db) == 0
    # the first answer counts; a replay (double click, back button, script) is refused
    assert client.post("/answer", data={"trial": trial, "choice": "B", "csrf": csrf}).status_code == 303
    resp = client.post("/answer", data={"trial": trial, "choice": "A", "csrf": csrf})
    assert resp.status_code == 409 and "already answered" in resp.get_data(as_text=True)
    with Store(db) as s:
        rows = s.answer_rows()
    assert [(r["trial"], r["choice"]) for r in rows] == [(trial, "B")]


def test_rater_text_is_escaped(db, client):
    evil = "<script>alert(1)</script>"
    page, trial, csrf = start(client, evil)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert evil not in page and escaped in page
    token = client.get_cookie(COOKIE).value
    resume = client.get(f"/resume/{token}").get_data(as_text=True)
    assert evil not in resume and escaped in resume
    # a rejected name is shown again inside an attribute: it must not break out of it
    breakout = '"><script>alert(2)</script>' + "x" * 100
    resp = create_app(db).test_client().post("/start", data={"name": breakout})
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "<script>alert(2)" not in text and "&#34;&gt;&lt;script&gt;" in text
    with Store(db) as s:
        assert s.rater(token).name == evil  # stored as typed, escaped only on output


def test_unknown_resume_token(client):
    resp = client.get("/resume/not-a-token")
    assert resp.status_code == 404
    assert client.get_cookie(COOKIE) is None


def test_cross_site_posts_refused(db, client):
    resp = client.post("/start", data={"name": "Eve"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 403 and client.get_cookie(COOKIE) is None
    _, trial, csrf = start(client)
    resp = client.post("/answer", data={"trial": trial, "choice": "A", "csrf": csrf},
                       headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 403 and n_answers(db) == 0
    with Store(db) as s:
        assert [r[0] for r in s.conn.execute("SELECT name FROM raters")] == ["Ann"]
    resp = client.post("/answer", data={"trial": trial, "choice": "A", "csrf": csrf},
                       headers={"Sec-Fetch-Site": "same-origin"})
    assert resp.status_code == 303 and n_answers(db) == 1
