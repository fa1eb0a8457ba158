"""The listening test as a Flask app: ``create_app(db_path)``; ``make_server`` runs it on waitress.

Pages: ``/`` instructions and name, ``/trial`` the rater's next unanswered trial, ``/answer``
(POST), ``/resume/<token>``, ``/done``, ``/audio/<id>``.

Safety (the threat model is in README.md, "Listening server: threat model"):
- a rater is a random token in an HttpOnly, SameSite=Strict cookie (or a private resume link);
  every answer also carries the rater's CSRF token, compared in constant time;
- a POST whose Origin (or, without one, Referer) is not the test's own origin is refused, and so
  is one a browser marks cross-site; a POST with neither header relies on the CSRF token;
- the origin is configured (``create_app(origin=...)``) or the address ``make_server`` binds;
  the Host header is never used, so links cannot be pointed at another host;
- audio is served to raters only (a valid cookie), looked up by integer id in the database
  only; no path from a request ever reaches the file system;
- a rater can answer only the trial shown to them, never one ahead;
- every template is autoescaped; a strict Content-Security-Policy allows no script at all.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, redirect, render_template, request, send_file, url_for
from jinja2 import DictLoader
from waitress import create_server

from espnet_probe.listening.pages import PAGES, STYLE
from espnet_probe.listening.store import AnswerRejected, Rater, Store

COOKIE = "listening_rater"
COOKIE_MAX_AGE = 90 * 24 * 3600
MAX_NAME = 100
THREADS = 8
_TRIAL_ID = re.compile(r"[0-9]{1,18}")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; media-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # the resume link holds the rater's token: no Referer to other sites; same-origin (not
    # no-referrer) because under no-referrer browsers post "Origin: null" even to this site
    "Referrer-Policy": "same-origin",
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL as a browser writes it in an Origin header;
    None for anything else (``null``, a bare path, a malformed URL)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad port or IPv6 literal
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown_port = "" if port in (None, _DEFAULT_PORTS[parts.scheme]) else f":{port}"
    return f"{parts.scheme}://{host}{shown_port}"


def create_app(db_path: Path, secure_cookie: bool = False, origin: str | None = None) -> Flask:
    """The app for one test database. ``secure_cookie``: HTTPS only (behind a TLS proxy).
    ``origin``: the URL raters open, e.g. ``https://listen.example.org``; without it,
    ``make_server`` uses the address it binds, and until then every POST that names an origin
    is refused."""
    public_origin = None if origin is None else _origin_of(origin)
    if origin is not None and public_origin is None:
        raise ValueError(f"origin {origin!r} is not an http(s)://host[:port] URL")
    if secure_cookie and public_origin is None:
        # behind a TLS proxy the bound address is not what browsers send as Origin
        raise ValueError("secure_cookie (a TLS proxy) needs the public origin: origin='https://...'")
    db_path = Path(db_path).resolve()
    Store(db_path).close()  # a missing or foreign database fails now, not at the first rater
    app = Flask(__name__)
    app.jinja_loader = DictLoader(PAGES)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024  # a form is a few hundred bytes
    app.config["PUBLIC_ORIGIN"] = public_origin

    def store() -> Store:
        if "store" not in g:
            g.store = Store(db_path)
        return g.store

    @app.teardown_appcontext
    def close_store(_exc) -> None:
        s = g.pop("store", None)
        if s is not None:
            s.close()

    @app.after_request
    def security_headers(resp: Response) -> Response:
        resp.headers.update(_HEADERS)
        if resp.mimetype == "text/html":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    def current_rater() -> Rater | None:
        token = request.cookies.get(COOKIE)
        return store().rater(token) if token else None

    def with_cookie(resp: Response, rater: Rater) -> Response:
        resp.set_cookie(COOKIE, rater.token, max_age=COOKIE_MAX_AGE, httponly=True,
                        samesite="Strict", secure=secure_cookie)
        return resp

    def message(title: str, reason: str, status: int):
        return render_template("message.html", title=title, reason=reason), status

    def start_page(error: str = "", name: str = "", status: int = 200):
        return render_template("start.html", n_trials=store().n_trials(), error=error,
                               name=name, max_name=MAX_NAME), status

    @app.before_request
    def refuse_foreign_posts():
        # another site's auto-submitted form could otherwise swap a rater's cookie for a new one
        if request.method != "POST":
            return None
        # Origin when sent (even empty or "null"), else Referer; neither: curl or an old browser
        claimed = request.headers.get("Origin", request.headers.get("Referer"))
        foreign = claimed is not None and _origin_of(claimed) != app.config["PUBLIC_ORIGIN"]
        if foreign or request.headers.get("Sec-Fetch-Site") == "cross-site":
            return message("Request refused", "Forms of this test are posted from its own pages only.", 403)
        return None

    @app.get("/")
    def index():
        if current_rater() is not None:
            return redirect(url_for("trial"), 303)
        return start_page()

    @app.post("/start")
    def start():
        name = request.form.get("name", "").strip()
        if not name or len(name) > MAX_NAME or not name.isprintable():
            return start_page(f"Please enter a name of 1 to {MAX_NAME} printable characters.",
                              name[:MAX_NAME], 400)
        rater = store().add_rater(name)
        return with_cookie(redirect(url_for("trial"), 303), rater)

    @app.get("/resume/<token>")
    def resume(token: str):
        rater = store().rater(token)
        if rater is None:
            return message("Unknown resume link", "This link does not belong to this test.", 404)
        answered, total = store().progress(rater.id)
        # a page rather than a redirect: browsers withhold SameSite=Strict cookies on a
        # redirect that follows a link from another site (an e-mail, a chat)
        return with_cookie(Response(render_template("resume.html", name=rater.name,
                                                    answered=answered, total=total)), rater)

    @app.get("/trial")
    def trial():
        rater = current_rater()
        if rater is None:
            return redirect(url_for("index"), 303)
        nxt = store().next_trial(rater.id)
        if nxt is None:
            return redirect(url_for("done"), 303)
        return render_template(
            "trial.html", position=nxt.position, total=nxt.total, trial=nxt.trial,
            stimuli=[("A", nxt.stim_a), ("B", nxt.stim_b), ("X", nxt.stim_x)], csrf=rater.csrf,
            name=rater.name,
            # from the configured origin, never from the Host header a client may forge
            resume_url=(app.config["PUBLIC_ORIGIN"] or "") + url_for("resume", token=rater.token))

    @app.post("/answer")
    def answer():
        rater = current_rater()
        if rater is None:
            return message("Not signed in", "No rater for this browser; start from the first page.", 403)
        token = request.form.get("csrf", "")
        # compare_digest raises on non-ASCII text; the real token is ASCII, so such a one is wrong
        if not (token.isascii() and secrets.compare_digest(token, rater.csrf)):
            return message("Answer refused", "Missing or wrong form token; reload the trial page.", 403)
        trial_id = request.form.get("trial", "")
        if not _TRIAL_ID.fullmatch(trial_id):  # ASCII digits that fit an SQLite integer
            return message("Answer refused", "The form has no valid trial number.", 400)
        try:
            store().submit_answer(rater.id, int(trial_id), request.form.get("choice", ""))
        except AnswerRejected as e:
            return message("Answer refused", e.reason, e.status)
        return redirect(url_for("trial"), 303)

    @app.get("/done")
    def done():
        rater = current_rater()
        if rater is None:
            return redirect(url_for("index"), 303)
        answered, total = store().progress(rater.id)
        if answered < total:
            return redirect(url_for("trial"), 303)
        return render_template("done.html", name=rater.name, total=total)

    @app.get("/audio/<int:stimulus_id>")
    def audio(stimulus_id: int):
        if current_rater() is None:  # the test's audio is for its raters only
            return message("Not signed in", "No rater for this browser; start from the first page.", 403)
        path = store().stimulus_path(stimulus_id)
        if path is None or not path.is_file():
            abort(404)
        # the download name is the id: the file name would give away utterance and speaker
        return send_file(path, mimetype="audio/wav", download_name=f"{stimulus_id}.wav",
                         conditional=True, max_age=3600)

    @app.get("/style.css")
    def style():
        return Response(STYLE, mimetype="text/css")

    return app


def _binds_every_address(host: str) -> bool:
    try:
        return not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        return False


def make_server(app: Flask, host: str = "127.0.0.1", port: int = 8000, threads: int = THREADS):
    """A waitress server for ``app``, bound but not yet running (``.run()``); port 0 picks a
    free one (``.effective_port``). Without a configured origin the app's origin becomes
    ``http://host:port``, the URL raters must then open."""
    configured = app.config["PUBLIC_ORIGIN"] is not None
    if not configured and _binds_every_address(host):
        raise ValueError(f"host {host!r} binds every address, so the URL raters open is unknown; "
                         "bind one address or name, or create the app with origin='http://NAME:PORT'")
    server = create_server(app, host=host, port=port, threads=threads)
    if not configured:
        bracketed = f"[{host}]" if ":" in host else host
        app.config["PUBLIC_ORIGIN"] = _origin_of(f"http://{bracketed}:{server.effective_port}")
    return server
