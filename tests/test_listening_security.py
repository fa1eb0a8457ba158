"""The listening-test app refuses what it must: files outside the database, audio without a
rater, forged, foreign, replayed and premature answers, answers without the rater's CSRF token,
posts from other origins, links built from a forged Host, and malformed requests (always a 4xx,
never a 5xx); and it escapes what raters type."""

from __future__ import annotations

import http.client
import logging
import socket
import sqlite3

import pytest

from espnet_probe.listening.app import COOKIE, create_app, make_server
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
    start(client)  # a signed-in rater: the session must not open any other file either
    resp = client.get(path)
    body = resp.get_data()
    assert resp.status_code in (404, 405), (path, resp.status_code)
    assert b"root:" not in body and SECRET.encode() not in body


def test_audio_traversal_over_raw_http(db):
    """Raw request lines, not normalised by any client library, against the real server."""
    with Store(db) as s:
        token = s.add_rater("Ann").token

    def get(port, path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Cookie", f"{COOKIE}={token}")
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
    start(client)
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
    # no Referer to other sites; not no-referrer, under which browsers post "Origin: null"
    assert page.headers["Referrer-Policy"] == "same-origin"
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


def test_csrf_token_with_non_ascii_refused(db, client):
    """compare_digest raises on non-ASCII text: such a token once gave a 500 and a traceback."""
    _, trial, csrf = start(client)
    for bad in ("\u00e9", "\u00e9" * len(csrf), csrf + "\u00e9", csrf[:-1] + "\u00e9",
                "\u0661" * len(csrf), "\U0001f3a7"):
        resp = client.post("/answer", data={"trial": trial, "choice": "A", "csrf": bad})
        assert resp.status_code == 403 and "form token" in resp.get_data(as_text=True), bad
    assert n_answers(db) == 0


# ------------------------------------------------------------ hostile requests, real server

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The real server on a database of its own and one rater of it: (port, db, rater)."""
    db = make_db(tmp_path_factory.mktemp("live"), per_layer=5)
    with Store(db) as s:
        rater = s.add_rater("Ann")
    with serving(db) as base:
        yield int(base.rsplit(":", 1)[1]), db, rater


def shown_trial(db, rater) -> int:
    """The trial on the rater's page now: a request that wrongly stores an answer moves it on,
    so the next case still aims at a trial that could be answered."""
    with Store(db) as s:
        return s.next_trial(rater.id).trial


def req(method: bytes, target: bytes, body: bytes = b"", *headers: bytes,
        cookie: bytes | None = b"@TOKEN@"):
    """One raw request as (header lines, body); ``send`` fills in @TOKEN@, @CSRF@ and @TRIAL@."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    if cookie is not None:
        lines.append(b"Cookie: " + COOKIE.encode() + b"=" + cookie)
    if method == b"POST" and not any(h.lower().startswith(b"content-type:") for h in headers):
        lines.append(b"Content-Type: application/x-www-form-urlencoded")
    return lines + list(headers), body


def send(port: int, request, rater, trial: int) -> int:
    """The status of one raw request; Content-Length is added unless the request frames its
    body itself. Bytes go out unchanged: no client library normalises them."""
    fill = {b"@TOKEN@": rater.token.encode(), b"@CSRF@": rater.csrf.encode(),
            b"@TRIAL@": str(trial).encode()}
    lines, body = request
    for key, value in fill.items():
        lines, body = [line.replace(key, value) for line in lines], body.replace(key, value)
    if body and not any(line.lower().startswith((b"content-length:", b"transfer-encoding:"))
                        for line in lines):
        lines.append(b"Content-Length: %d" % len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        response = b""
        while chunk := sock.recv(65536):  # every request here says Connection: close
            response += chunk
    return int(response.split(b" ", 2)[1])


FORM = b"trial=@TRIAL@&choice=A&csrf="
ANSWER = FORM + b"@CSRF@"  # a valid answer: only the part under test is wrong
HOSTILE = {
    # non-ASCII CSRF tokens
    "csrf e-acute, percent-encoded UTF-8": req(b"POST", b"/answer", FORM + b"%C3%A9"),
    "csrf e-acute, raw UTF-8": req(b"POST", b"/answer", FORM + "\u00e9".encode()),
    "csrf token + e-acute": req(b"POST", b"/answer", ANSWER + b"%C3%A9"),
    "csrf 43 x e-acute": req(b"POST", b"/answer", FORM + b"%C3%A9" * 43),
    "csrf raw byte 0xe9": req(b"POST", b"/answer", FORM + b"\xe9"),
    "csrf raw bytes 0xff 0xfe": req(b"POST", b"/answer", FORM + b"\xff\xfe"),
    "csrf NUL": req(b"POST", b"/answer", FORM + b"%00"),
    "csrf only in a header, non-ASCII": req(b"POST", b"/answer", b"trial=@TRIAL@&choice=A",
                                            b"X-CSRF-Token: \xc3\xa9"),
    # Content-Length
    "Content-Length negative": req(b"POST", b"/answer", ANSWER, b"Content-Length: -5"),
    "Content-Length not a number": req(b"POST", b"/answer", ANSWER, b"Content-Length: abc"),
    "Content-Length with sign": req(b"POST", b"/answer", ANSWER, b"Content-Length: +5"),
    "Content-Length float": req(b"POST", b"/answer", ANSWER, b"Content-Length: 1e3"),
    "Content-Length 10^20": req(b"POST", b"/answer", ANSWER, b"Content-Length: " + b"9" * 20),
    "Content-Length twice, differing": req(b"POST", b"/answer", ANSWER, b"Content-Length: 5",
                                           b"Content-Length: 6"),
    # bodies
    "body over 16 KiB": req(b"POST", b"/start", b"name=" + b"a" * 20000, cookie=None),
    "chunked body over 16 KiB": req(b"POST", b"/start", b"4e20\r\n" + b"a" * 20000 + b"\r\n0\r\n\r\n",
                                    b"Transfer-Encoding: chunked", cookie=None),
    "bad chunk size": req(b"POST", b"/start", b"zz\r\nabc\r\n0\r\n\r\n", b"Transfer-Encoding: chunked",
                          cookie=None),
    "chunked and Content-Length": req(b"POST", b"/start", b"0\r\n\r\n", b"Transfer-Encoding: chunked",
                                      b"Content-Length: 5", cookie=None),
    "name not UTF-8": req(b"POST", b"/start", b"name=\xff\xfe", cookie=None),
    "trial not UTF-8": req(b"POST", b"/answer", b"trial=\xff&choice=A&csrf=@CSRF@"),
    "choice not UTF-8": req(b"POST", b"/answer", b"trial=@TRIAL@&choice=\xff&csrf=@CSRF@"),
    "multipart without boundary": req(b"POST", b"/start", b"--x\r\nfoo",
                                      b"Content-Type: multipart/form-data", cookie=None),
    "multipart cut short": req(b"POST", b"/start", b"--x\r\nfoo",
                               b"Content-Type: multipart/form-data; boundary=x", cookie=None),
    "unknown charset, name not UTF-8": req(
        b"POST", b"/start", b"name=\xe9", b"Content-Type: application/x-www-form-urlencoded; charset=bogus",
        cookie=None),
    "JSON, not a form": req(b"POST", b"/answer", b'{"csrf": "@CSRF@"}', b"Content-Type: application/json"),
    # methods
    "method FOO": req(b"FOO", b"/"),
    "method DELETE": req(b"DELETE", b"/answer"),
    "method PUT": req(b"PUT", b"/start", b"name=x"),
    "method PATCH": req(b"PATCH", b"/answer", ANSWER),
    "method TRACE": req(b"TRACE", b"/"),
    "POST to a page": req(b"POST", b"/trial", ANSWER),
    "POST to audio": req(b"POST", b"/audio/1"),
    "lower-case method": req(b"get", b"/"),
    "method with 0xff": req(b"G\xffT", b"/"),
    # request line and headers
    "garbage request line": ([b"GARBAGE"], b""),
    "bad HTTP version": ([b"GET / HTTX/1.1", b"Host: x", b"Connection: close"], b""),
    "header without colon": ([b"GET / HTTP/1.1", b"Host: x", b"nocolon", b"Connection: close"], b""),
    "space in the path": ([b"GET /a b HTTP/1.1", b"Host: x", b"Connection: close"], b""),
    "raw 0xff in the path": req(b"GET", b"/resume/\xff"),
    # query strings
    "tokens in the query, not the form": req(b"POST", b"/answer?" + ANSWER),
    "raw 0xff in the query": req(b"GET", b"/trial?\xff=\xfe"),
    "odd query, unknown stimulus": req(b"GET", b"/audio/99999?%&%ZZ&a=%ED%A0%80&;;=="),
    "odd query, unknown resume token": req(b"GET", b"/resume/nope?%%%&&==&a=%00"),
    # cookies
    "cookie 0xff 0xfe": req(b"POST", b"/answer", ANSWER, cookie=b"\xff\xfe"),
    "cookie octal-escaped surrogate": req(b"POST", b"/answer", ANSWER, cookie=b'"\\355\\240\\200"'),
    "cookie percent-encoded surrogate": req(b"POST", b"/answer", ANSWER, cookie=b"%ED%A0%80"),
    "cookie syntax garbage": req(b"POST", b"/answer", ANSWER, b'Cookie: ;;;=;="""; ' + COOKIE.encode(),
                                 cookie=None),
    "cookie of 5000 characters": req(b"POST", b"/answer", ANSWER, cookie=b"a" * 5000),
    "cookie NUL": req(b"GET", b"/trial", cookie=b"\x00"),
    "audio, no cookie": req(b"GET", b"/audio/1", cookie=None),
    "audio, cookie 0xff": req(b"GET", b"/audio/1", cookie=b"\xff"),
    # Origin and Referer
    "Origin of another site, /start": req(b"POST", b"/start", b"name=Eve", b"Origin: http://evil.example",
                                          cookie=None),
    "Origin of another site, /answer": req(b"POST", b"/answer", ANSWER, b"Origin: http://evil.example"),
    "Referer of another site, /answer": req(b"POST", b"/answer", ANSWER,
                                            b"Referer: http://evil.example/page"),
    "Origin of another port, /answer": req(b"POST", b"/answer", ANSWER, b"Origin: http://127.0.0.1:1"),
    "Origin with 0xff": req(b"POST", b"/answer", ANSWER, b"Origin: http://\xff"),
    "Origin null": req(b"POST", b"/answer", ANSWER, b"Origin: null"),
    "Origin with a bad port": req(b"POST", b"/answer", ANSWER, b"Origin: http://127.0.0.1:abc"),
    "Referer, broken IPv6": req(b"POST", b"/answer", ANSWER, b"Referer: http://[::1"),
    # ranges
    "Range past the end": req(b"GET", b"/audio/1", b"", b"Range: bytes=99999-"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_malformed_and_hostile_requests_get_4xx(live, case, caplog):
    port, db, rater = live
    before = n_answers(db)
    status = send(port, HOSTILE[case], rater, shown_trial(db, rater))
    assert 400 <= status < 500, (case, status)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback logged
    assert n_answers(db) == before  # nothing stored


def test_unknown_transfer_coding_is_waitress_501(live, caplog):
    """The one 5xx kept on purpose: waitress answers a transfer coding it cannot decode with
    501, as RFC 9112 (6.1) asks, before the app sees the request; no traceback, nothing stored."""
    port, db, rater = live
    before = n_answers(db)
    for coding in (b"gzip", b"gzip, chunked", b"bogus"):
        request = req(b"POST", b"/answer", ANSWER, b"Transfer-Encoding: " + coding)
        assert send(port, request, rater, shown_trial(db, rater)) == 501
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert n_answers(db) == before


# ------------------------------------------------------------ origin policy

ORIGIN = "http://listen.test"
FOREIGN = ["http://evil.example", "null", "", "https://listen.test", "http://listen.test:8080",
           "http://listen.test.evil.example", "http://evil.example/http://listen.test", "http://[::1",
           "listen.test", "/trial"]


@pytest.fixture
def sited(db):
    """A client of the app configured with its public origin ORIGIN."""
    return create_app(db, origin=ORIGIN).test_client()


@pytest.mark.parametrize("header", ["Origin", "Referer"])
@pytest.mark.parametrize("value", FOREIGN)
def test_posts_from_other_origins_refused(db, sited, header, value):
    resp = sited.post("/start", data={"name": "Eve"}, headers={header: value})
    assert resp.status_code == 403 and sited.get_cookie(COOKIE) is None
    _, trial, csrf = start(sited)
    resp = sited.post("/answer", data={"trial": trial, "choice": "A", "csrf": csrf},
                      headers={header: value})
    assert resp.status_code == 403 and n_answers(db) == 0


def test_origin_is_decisive_when_present(db, sited):
    _, trial, csrf = start(sited)
    resp = sited.post("/answer", data={"trial": trial, "choice": "A", "csrf": csrf},
                      headers={"Origin": "http://evil.example", "Referer": ORIGIN + "/trial"})
    assert resp.status_code == 403 and n_answers(db) == 0


@pytest.mark.parametrize("headers", [
    {"Origin": ORIGIN}, {"Origin": "HTTP://Listen.Test:80"}, {"Referer": ORIGIN + "/trial?x=1"},
    {"Origin": ORIGIN, "Referer": "http://evil.example/"}, {}])  # {}: curl, old browsers
def test_own_origin_and_headerless_posts_accepted(db, sited, headers):
    resp = sited.post("/start", data={"name": "Ann"}, headers=headers, follow_redirects=True)
    page = resp.get_data(as_text=True)
    trial, csrf = TRIAL_FIELD.search(page)[1], CSRF_FIELD.search(page)[1]
    resp = sited.post("/answer", data={"trial": trial, "choice": "A", "csrf": csrf}, headers=headers)
    assert resp.status_code == 303 and n_answers(db) == 1


def test_bound_address_is_the_origin(live):
    """Without a configured origin the server's own http://host:port is the only one accepted."""
    port = live[0]

    def post_start(origin):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/start", "name=Ann", {"Origin": origin,
                                                    "Content-Type": "application/x-www-form-urlencoded"})
        status = conn.getresponse().status
        conn.close()
        return status

    assert post_start(f"http://127.0.0.1:{port}") == 303
    for other in (f"http://localhost:{port}", "http://127.0.0.1", f"https://127.0.0.1:{port}"):
        assert post_start(other) == 403, other


def test_origin_must_be_known(db):
    with pytest.raises(ValueError, match="binds every address"):
        make_server(create_app(db), "0.0.0.0", 0)
    with pytest.raises(ValueError, match="binds every address"):
        make_server(create_app(db), "::", 0)
    with pytest.raises(ValueError, match="public origin"):  # a TLS proxy's name is not the bound one
        create_app(db, secure_cookie=True)
    with pytest.raises(ValueError, match="not an http"):
        create_app(db, origin="listen.test")
    assert create_app(db, origin="https://Listen.Example.org:443/").config["PUBLIC_ORIGIN"] == \
        "https://listen.example.org"


# ------------------------------------------------------------ Host header

@pytest.mark.parametrize("origin", [None, ORIGIN])
def test_resume_link_ignores_host_header(db, origin):
    client = create_app(db, origin=origin).test_client()
    start(client)
    token = client.get_cookie(COOKIE).value
    client.set_cookie(COOKIE, token, domain="evil.example")  # the client files cookies by host
    page = client.get("/trial", headers={"Host": "evil.example", "X-Forwarded-Host": "evil2.example"})
    text = page.get_data(as_text=True)
    assert "evil" not in text
    assert f'href="{origin or ""}/resume/{token}"' in text  # relative when no origin is known


def test_resume_link_ignores_host_header_over_http(live):
    port, _, rater = live
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/trial", headers={"Host": "evil.example", "Cookie": f"{COOKIE}={rater.token}"})
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    assert resp.status == 200 and "evil" not in text
    assert f'href="http://127.0.0.1:{port}/resume/{rater.token}"' in text  # the bound address


# ------------------------------------------------------------ audio needs a rater

def test_audio_needs_a_rater(db, client):
    with Store(db) as s:
        stim_id = s.conn.execute("SELECT min(id) FROM stimuli").fetchone()[0]
    for headers in ({}, {"Range": "bytes=0-99"}):
        assert client.get(f"/audio/{stim_id}", headers=headers).status_code == 403
        assert client.get("/audio/99999", headers=headers).status_code == 403  # nothing revealed
    client.set_cookie(COOKIE, "not-a-rater")
    assert client.get(f"/audio/{stim_id}").status_code == 403
    start(client)
    resp = client.get(f"/audio/{stim_id}")
    assert resp.status_code == 200 and resp.get_data()[:4] == b"RIFF"


# ------------------------------------------------------------ only the shown trial

def test_answers_only_for_the_shown_trial(db, client):
    _, shown, csrf = start(client)
    with Store(db) as s:
        rater = s.rater(client.get_cookie(COOKIE).value)
        order = [t for (t,) in s.conn.execute(
            "SELECT trial FROM issued WHERE rater = ? ORDER BY position", (rater.id,))]
    assert order[0] == shown

    def post(trial, choice="A"):
        resp = client.post("/answer", data={"trial": trial, "choice": choice, "csrf": csrf})
        return resp.status_code, resp.get_data(as_text=True)

    for ahead in order[1:]:
        status, text = post(ahead)
        assert status == 409 and "not been shown yet" in text, ahead
    assert n_answers(db) == 0
    for k, trial in enumerate(order):
        assert post(trial)[0] == 303
        status, text = post(trial, "B")  # a replay of the trial just answered
        assert status == 409 and "already answered" in text
        if k + 2 < len(order):  # two ahead is still unseen
            status, text = post(order[k + 2])
            assert status == 409 and "not been shown yet" in text
    with Store(db) as s:
        assert [(r["trial"], r["choice"]) for r in s.answer_rows()] == [(t, "A") for t in order]


@pytest.mark.parametrize("extra, message", [
    (["--host", "0.0.0.0"], "binds every address"),
    (["--secure_cookie"], "needs the public origin"),
    (["--origin", "ftp://x"], "is not an http(s)://host[:port] URL"),
])
def test_serve_refuses_an_origin_it_cannot_enforce_in_one_line(db, capsys, extra, message):
    from espnet_probe.bin import listening_test

    assert listening_test.main(["serve", "--db", str(db), "--port", "0", *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("listening_test serve: error: ") and message in err[0]
