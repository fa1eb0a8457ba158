"""The listening test's SQLite database.

Tables: ``meta`` (seed, experiment root, schema version), ``stimuli`` (id -> absolute wav path),
``trials`` (A, B, X stimuli and the right answer), ``raters`` (secret token, CSRF token, name),
``issued`` (which trials a rater gets, in which order) and ``answers`` (one per rater and trial).

Concurrency: WAL mode (readers never wait for the writer), a busy timeout instead of "database
is locked" errors, one connection per request or thread, and every write in ``BEGIN IMMEDIATE``
so the check-then-insert of an answer is one atomic step.
"""

from __future__ import annotations

import contextlib
import csv
import random
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from espnet_probe.listening.triplets import Triplet
from espnet_probe.utils.fileio import atomic_open, atomic_path

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_MS = 30_000
CHOICES = ("A", "B")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE stimuli (
  id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, utt TEXT NOT NULL, speaker TEXT NOT NULL);
CREATE TABLE trials (
  id INTEGER PRIMARY KEY, exp TEXT NOT NULL, model TEXT NOT NULL, training TEXT NOT NULL,
  set_name TEXT NOT NULL, layer TEXT NOT NULL, layer_index INTEGER NOT NULL,
  stim_a INTEGER NOT NULL REFERENCES stimuli(id), stim_b INTEGER NOT NULL REFERENCES stimuli(id),
  stim_x INTEGER NOT NULL REFERENCES stimuli(id),
  answer TEXT NOT NULL CHECK (answer IN ('A', 'B')));
CREATE TABLE raters (
  id INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE, csrf TEXT NOT NULL, name TEXT NOT NULL,
  created TEXT NOT NULL);
CREATE TABLE issued (
  rater INTEGER NOT NULL REFERENCES raters(id), trial INTEGER NOT NULL REFERENCES trials(id),
  position INTEGER NOT NULL, PRIMARY KEY (rater, trial), UNIQUE (rater, position));
CREATE TABLE answers (
  id INTEGER PRIMARY KEY, rater INTEGER NOT NULL, trial INTEGER NOT NULL,
  choice TEXT NOT NULL CHECK (choice IN ('A', 'B')), answered_at TEXT NOT NULL,
  UNIQUE (rater, trial), FOREIGN KEY (rater, trial) REFERENCES issued(rater, trial));
"""

EXPORT_COLUMNS = ("rater", "rater_name", "position", "trial", "exp", "model", "training", "set",
                  "layer", "layer_index", "utt_a", "speaker_a", "utt_b", "speaker_b", "utt_x",
                  "speaker_x", "answer", "choice", "error", "answered_at")


class StoreError(RuntimeError):
    pass


class AnswerRejected(StoreError):
    """An answer that is not stored; ``status`` is the HTTP status that fits the reason."""

    def __init__(self, reason: str, status: int):
        super().__init__(reason)
        self.reason, self.status = reason, status


@dataclass(frozen=True)
class Rater:
    id: int
    token: str  # secret: whoever holds it answers as this rater
    csrf: str
    name: str


@dataclass(frozen=True)
class NextTrial:
    trial: int
    stim_a: int
    stim_b: int
    stim_x: int
    position: int  # 1-based place in the rater's order
    total: int


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _connect(path: Path, create: bool = False) -> sqlite3.Connection:
    # mode=rw: opening a mistyped path must fail, not create an empty database
    uri = f"{Path(path).resolve().as_uri()}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextlib.contextmanager
def _write(conn: sqlite3.Connection):
    """One write transaction that takes the write lock up front, so two requests cannot both
    pass a check and then both insert."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _answer_count_of_idle_db(db_path: Path) -> int:
    """Answers held by an existing database that no process has open."""
    try:
        conn = _connect(db_path)
        try:
            n = conn.execute("SELECT count(*) FROM answers").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{db_path} exists but is not a listening-test database ({e}); "
                         "move it away first") from None
    # the last connection to close removes the WAL; if it stays, a server has the db open
    if Path(f"{db_path}-wal").exists():
        raise StoreError(f"{db_path} is open in another process (a running server?); stop it first")
    return n


def build_db(db_path: Path, triplets: list[Triplet], exp_root: Path, seed: int,
             force: bool = False) -> None:
    """Write the test to ``db_path``: built under a temporary name, renamed into place when
    complete. An existing database with answers is replaced only with ``force``."""
    db_path = Path(db_path)
    if not triplets:
        raise StoreError("no triplets to store")
    if db_path.exists():
        n = _answer_count_of_idle_db(db_path)
        if n and not force:
            raise StoreError(f"{db_path} already holds {n} answers; export them, then use --force "
                             "to replace the test")
    paths = sorted({s.path for t in triplets for s in (t.a, t.b, t.x)})
    stimuli = {s.path: s for t in triplets for s in (t.a, t.b, t.x)}
    # shuffled ids: consecutive ids would tell a curious rater which files are the same speaker
    ids = list(range(1, len(paths) + 1))
    random.Random(f"{seed}/stimulus-ids").shuffle(ids)
    stim_id = dict(zip(paths, ids))
    with atomic_path(db_path) as tmp:
        conn = _connect(tmp, create=True)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            with _write(conn):
                # statement by statement: executescript would commit the open transaction
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("schema_version", SCHEMA_VERSION), ("seed", str(seed)),
                    ("exp_root", str(Path(exp_root).resolve())), ("created", _now())])
                conn.executemany("INSERT INTO stimuli VALUES (?, ?, ?, ?)",
                                 [(stim_id[p], str(p), stimuli[p].utt, stimuli[p].speaker) for p in paths])
                conn.executemany(
                    "INSERT INTO trials (exp, model, training, set_name, layer, layer_index, "
                    "stim_a, stim_b, stim_x, answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(t.exp, t.model, t.training, t.set_name, t.layer, t.layer_index,
                      stim_id[t.a.path], stim_id[t.b.path], stim_id[t.x.path], t.answer)
                     for t in triplets])
        finally:
            conn.close()  # the last close checkpoints the WAL into the file before the rename


class Store:
    """One connection to a test database; use one Store per request or thread."""

    def __init__(self, db_path: Path):
        self.path = Path(db_path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no listening-test database (build one with "
                             "'python -m espnet_probe.bin.listening_test make')")
        self.conn = _connect(self.path)
        try:
            version = self.meta("schema_version")
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise StoreError(f"{self.path}: not a listening-test database ({e})") from None
        if version != SCHEMA_VERSION:
            self.conn.close()
            raise StoreError(f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def n_trials(self) -> int:
        return self.conn.execute("SELECT count(*) FROM trials").fetchone()[0]

    def n_answers(self) -> int:
        return self.conn.execute("SELECT count(*) FROM answers").fetchone()[0]

    # ------------------------------------------------------------ raters

    def add_rater(self, name: str) -> Rater:
        """A new rater with every trial issued in an order seeded by the test seed and rater id."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with _write(self.conn):
            rater_id = self.conn.execute(
                "INSERT INTO raters (token, csrf, name, created) VALUES (?, ?, ?, ?)",
                (token, csrf, name, _now())).lastrowid
            trials = [r[0] for r in self.conn.execute("SELECT id FROM trials ORDER BY id")]
            random.Random(f"{self.meta('seed')}/rater/{rater_id}").shuffle(trials)
            self.conn.executemany("INSERT INTO issued VALUES (?, ?, ?)",
                                  [(rater_id, t, pos) for pos, t in enumerate(trials, 1)])
        return Rater(rater_id, token, csrf, name)

    def rater(self, token: str) -> Rater | None:
        row = self.conn.execute("SELECT id, token, csrf, name FROM raters WHERE token = ?",
                                (token,)).fetchone()
        return None if row is None else Rater(*row)

    def progress(self, rater_id: int) -> tuple[int, int]:
        """(answered, issued) for one rater."""
        row = self.conn.execute(
            "SELECT count(a.id), count(*) FROM issued i LEFT JOIN answers a "
            "ON a.rater = i.rater AND a.trial = i.trial WHERE i.rater = ?", (rater_id,)).fetchone()
        return row[0], row[1]

    def next_trial(self, rater_id: int) -> NextTrial | None:
        """The rater's first unanswered trial in their order; None when all are answered."""
        row = self.conn.execute(
            "SELECT t.id, t.stim_a, t.stim_b, t.stim_x, i.position, "
            "(SELECT count(*) FROM issued WHERE rater = i.rater) FROM issued i "
            "JOIN trials t ON t.id = i.trial "
            "WHERE i.rater = ? AND NOT EXISTS "
            "(SELECT 1 FROM answers a WHERE a.rater = i.rater AND a.trial = i.trial) "
            "ORDER BY i.position LIMIT 1", (rater_id,)).fetchone()
        return None if row is None else NextTrial(*row)

    # ------------------------------------------------------------ answers

    def submit_answer(self, rater_id: int, trial_id: int, choice: str) -> None:
        """Store the answer to the rater's current trial (``next_trial``), or raise
        AnswerRejected saying why it is not stored."""
        if choice not in CHOICES:
            raise AnswerRejected(f"the answer must be A or B, got {choice!r}", 400)
        with _write(self.conn):
            issued = self.conn.execute("SELECT 1 FROM issued WHERE rater = ? AND trial = ?",
                                       (rater_id, trial_id)).fetchone()
            if issued is None:
                raise AnswerRejected(f"trial {trial_id} was not issued to this rater", 403)
            answered = self.conn.execute("SELECT 1 FROM answers WHERE rater = ? AND trial = ?",
                                         (rater_id, trial_id)).fetchone()
            if answered is not None:
                raise AnswerRejected(f"trial {trial_id} is already answered; an answer cannot "
                                     "be changed", 409)
            # only the trial on the rater's page: an answer to one never heard is no judgement
            shown = self.next_trial(rater_id)
            if shown.trial != trial_id:
                raise AnswerRejected(f"trial {trial_id} has not been shown yet; answer trial "
                                     f"{shown.position} first", 409)
            self.conn.execute("INSERT INTO answers (rater, trial, choice, answered_at) "
                              "VALUES (?, ?, ?, ?)", (rater_id, trial_id, choice, _now()))

    # ------------------------------------------------------------ audio

    def stimulus_path(self, stimulus_id: int) -> Path | None:
        """The stored file of a stimulus; None for an unknown id or a path that no longer lies
        inside the experiment root recorded at build time (a database edited by hand)."""
        if not 0 < stimulus_id < 2**63:  # beyond SQLite's integers: no such row
            return None
        row = self.conn.execute("SELECT path FROM stimuli WHERE id = ?", (stimulus_id,)).fetchone()
        if row is None:
            return None
        path = Path(row[0]).resolve()
        return path if path.is_relative_to(self.meta("exp_root")) else None

    # ------------------------------------------------------------ results

    def answer_rows(self) -> list[dict]:
        """Every answer with its trial, in rater and position order (EXPORT_COLUMNS)."""
        rows = self.conn.execute(
            "SELECT r.id AS rater, r.name AS rater_name, i.position, t.id AS trial, t.exp, t.model, "
            "t.training, t.set_name AS \"set\", t.layer, t.layer_index, "
            "sa.utt AS utt_a, sa.speaker AS speaker_a, sb.utt AS utt_b, sb.speaker AS speaker_b, "
            "sx.utt AS utt_x, sx.speaker AS speaker_x, t.answer, a.choice, "
            "a.choice != t.answer AS error, a.answered_at "
            "FROM answers a JOIN raters r ON r.id = a.rater JOIN trials t ON t.id = a.trial "
            "JOIN issued i ON i.rater = a.rater AND i.trial = a.trial "
            "JOIN stimuli sa ON sa.id = t.stim_a JOIN stimuli sb ON sb.id = t.stim_b "
            "JOIN stimuli sx ON sx.id = t.stim_x ORDER BY r.id, i.position").fetchall()
        return [dict(r) for r in rows]

    def trial_groups(self) -> list[dict]:
        """(model, training, set, layer, layer_index) of the test's trials, in build order."""
        rows = self.conn.execute(
            "SELECT model, training, set_name AS \"set\", layer, layer_index FROM trials "
            "GROUP BY model, training, set_name, layer ORDER BY min(id)").fetchall()
        return [dict(r) for r in rows]


def _spreadsheet_safe(text: str) -> str:
    """Rater names are typed by anyone: keep a spreadsheet from reading one as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_answers(store: Store, out: Path) -> int:
    """Write every answer to a CSV (EXPORT_COLUMNS); returns how many."""
    rows = store.answer_rows()
    with atomic_open(out) as f:
        w = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "rater_name": _spreadsheet_safe(r["rater_name"])})
    return len(rows)
