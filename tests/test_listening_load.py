"""50 raters answering at once over real HTTP (waitress on loopback, 8 threads, one SQLite
database): every answer is stored exactly once, none is lost. (Its wall
time is printed for the record; speed is measured in BENCHMARKS.md, not asserted here.)"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from espnet_probe.listening.store import Store
from tests.listening_support import HttpRater, make_db, serving

N_RATERS = 50
N_ANSWERS = 20


def rate_all(base: str, index: int) -> int:
    """One rater: start, then answer every trial; returns how many were answered."""
    rater = HttpRater(base, timeout=60)
    page = rater.start(f"rater {index}")
    answered = 0
    while 'name="trial"' in page:
        page = rater.answer(page, "AB"[(index + answered) % 2])
        answered += 1
        if answered > N_ANSWERS:
            raise AssertionError(f"rater {index} got more than {N_ANSWERS} trials")
    assert "Thank you" in page, page
    return answered


def test_concurrent_raters(tmp_path):
    # 2 layers x 10 triplets: each rater is issued exactly N_ANSWERS trials
    db = make_db(tmp_path, per_layer=N_ANSWERS // 2)
    with Store(db) as s:
        assert s.n_trials() == N_ANSWERS
    start = time.monotonic()
    with serving(db) as base, ThreadPoolExecutor(max_workers=N_RATERS) as pool:
        counts = list(pool.map(lambda i: rate_all(base, i), range(N_RATERS)))
    elapsed = time.monotonic() - start
    assert counts == [N_ANSWERS] * N_RATERS
    with Store(db) as s:
        rows = s.answer_rows()
        n_raters = s.conn.execute("SELECT count(*) FROM raters").fetchone()[0]
    assert n_raters == N_RATERS
    assert len(rows) == N_RATERS * N_ANSWERS
    pairs = {(r["rater"], r["trial"]) for r in rows}
    assert len(pairs) == len(rows)  # no duplicates
    per_rater = {}
    for r in rows:
        per_rater.setdefault(r["rater"], set()).add(r["trial"])
    assert all(trials == set(range(1, N_ANSWERS + 1)) for trials in per_rater.values())  # none lost
    # each stored choice is the one that rater sent for that position
    names = {r["rater"]: int(r["rater_name"].split()[1]) for r in rows}
    assert all(r["choice"] == "AB"[(names[r["rater"]] + r["position"] - 1) % 2] for r in rows)
    print(f"{len(rows)} answers from {N_RATERS} concurrent raters in {elapsed:.1f} s")
