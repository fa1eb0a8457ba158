"""The listening test as a Flask app: ``create_app(db_path)``; ``make_server`` runs it on waitress.

Pages: ``/`` instructions and name, ``/trial`` the rater's next unanswered trial, ``/answer``
(POST), ``/resume/<token>``, ``/done``, ``/audio/<id>``.

Safety:
- a rater is a random token in an HttpOnly, SameSite=Strict cookie (or a private resume link);
  every answer also carries the rater's CSRF token, compared in constant time;
- audio is looked up by integer id in the database only; no path from a request ever reaches
  the file system;
- every template is autoescaped; a strict Content-Security-Policy allows no script at all.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

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
    "Referrer-Policy": "no-referrer",  # the resume link holds the rater's token
}


def create_app(db_path: Path, secure_cookie: bool = False) -> Flask:
    """The app for one test database. ``secure_cookie``: HTTPS only (behind a TLS proxy)."""
    db_path = Path(db_path).resolve()
    Store(db_path).close()  # a missing or foreign database fails now, not at the first rater
    app = Flask(__name__)
    app.jinja_loader = DictLoader(PAGES)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024  # a form is a few hundred bytes

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
    def refuse_cross_site_posts():
        # another site's auto-submitted form could otherwise swap a rater's cookie for a new one
        if request.method == "POST" and request.headers.get("Sec-Fetch-Site") == "cross-site":
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
            name=rater.name, resume_url=url_for("resume", token=rater.token, _external=True))

    @app.post("/answer")
    def answer():
        rater = current_rater()
        if rater is None:
            return message("Not signed in", "No rater for this browser; start from the first page.", 403)
        if not secrets.compare_digest(request.form.get("csrf", ""), rater.csrf):
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


def make_server(app: Flask, host: str = "127.0.0.1", port: int = 8000, threads: int = THREADS):
    """A waitress server for ``app``, bound but not yet running (``.run()``); port 0 picks a
    free one (``.effective_port``)."""
    return create_server(app, host=host, port=port, threads=threads)
