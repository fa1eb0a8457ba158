"""Intelligibility and quality of estimated speech against the clean reference, per utterance.

Metrics: STOI and extended STOI (pystoi), wideband PESQ (pesq, 16 kHz, mode 'wb').
The estimate and reference are trimmed to the shorter length; they may differ by at most
``max_len_diff`` samples (default one 10 ms hop, the slack of frame-wise resynthesis) —
more than that means mismatched files and is an error naming the utterance.

Failures are kept, never dropped: PESQ raises on a silent or too-short signal (e.g.
NoUtterancesError), and pystoi returns a placeholder 1e-5 with a warning when the reference
has too few non-silent frames. Such an utterance gets ``nan`` in the per-utterance file and is
counted, with its id and reason, in summary.json; means are over the utterances that scored.

Parallelism follows the recipe's job convention: ``run_job(nj, job)`` scores the job-th shard
of the utterance list into ``<out>/split<nj>/scores.<job>.jsonl`` (written atomically, headed by
a digest of its inputs so a re-run skips finished jobs and redoes stale ones); ``merge`` joins
them into ``<out>/{stoi,estoi,pesq}`` (``utt value`` lines) and ``<out>/summary.json``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from espnet_probe.audio.io import SAMPLE_RATE, load_audio
from espnet_probe.metrics import blas_threads
from espnet_probe.utils.fileio import atomic_open, shard
from espnet_probe.utils.freshness import entry_fingerprint
from espnet_probe.utils.kaldi_dir import DataDirError, read_table

METRICS = ("stoi", "estoi", "pesq")
HOP = 160


class QualityError(RuntimeError):
    """Inputs that cannot be scored: mismatched lists, lengths, or stale/missing jobs."""


@dataclass
class UttScore:
    utt: str
    values: dict[str, float] = field(default_factory=dict)  # nan where the metric failed
    errors: dict[str, str] = field(default_factory=dict)   # metric -> reason


def align(utt: str, ref: np.ndarray, est: np.ndarray, max_len_diff: int = HOP):
    """Trim both to the shorter length; a larger mismatch than ``max_len_diff`` is an error."""
    diff = abs(ref.size - est.size)
    if diff > max_len_diff:
        raise QualityError(f"utterance '{utt}': estimate has {est.size} samples, reference "
                           f"{ref.size} (differ by {diff} > {max_len_diff}): mismatched files?")
    n = min(ref.size, est.size)
    return ref[:n], est[:n]


def _intelligibility(ref: np.ndarray, est: np.ndarray, extended: tuple[bool, ...]) -> list[float]:
    """STOI (extended=False) and ESTOI (True) from one pass of pystoi's preprocessing.

    pystoi.stoi resamples, drops silent frames and takes the STFT of both signals anew for each
    measure, and builds the 30-frame segments in a Python loop: 70 % of its time for our 3 s
    utterances. Here the preprocessing is pystoi's own (its resampler, silent-frame removal,
    STFT and 1/3-octave matrix, called once) and the two formulas of Taal et al. 2011 and
    Jensen & Taal 2016 are evaluated on sliding-window views. pystoi's ESTOI adds 1e-16 noise
    before normalising (a guard against all-zero rows); a zero row here divides by EPS
    instead. tests/test_quality.py checks both against pystoi.stoi on real speech.
    """
    from numpy.lib.stride_tricks import sliding_window_view
    from pystoi import utils

    # the module, not the function of the same name that pystoi's package exports
    pystoi_stoi = importlib.import_module("pystoi.stoi")

    if not np.any(ref):  # pystoi would return a number, but it means nothing
        raise QualityError("reference is digital silence")
    fs, n_seg = pystoi_stoi.FS, pystoi_stoi.N
    x = utils.resample_oct(ref, fs, SAMPLE_RATE)
    y = utils.resample_oct(est, fs, SAMPLE_RATE)
    frame = pystoi_stoi.N_FRAME
    x, y = utils.remove_silent_frames(x, y, pystoi_stoi.DYN_RANGE, frame, frame // 2)
    bands = []
    for sig in (x, y):
        spec = utils.stft(sig, frame, pystoi_stoi.NFFT, overlap=2).T
        bands.append(np.sqrt(pystoi_stoi.OBM @ np.square(np.abs(spec))))
    if bands[0].shape[1] < n_seg:  # pystoi: a warning and a 1e-5 placeholder
        raise QualityError("reference has too few non-silent frames for STOI")
    # (segments, bands, frames): segment m holds frames m .. m + 29
    xs, ys = (sliding_window_view(b, n_seg, axis=1).transpose(1, 0, 2) for b in bands)
    eps = utils.EPS
    out = []
    for ext in extended:
        if ext:
            xn, yn = _row_col_normalize(xs, eps), _row_col_normalize(ys, eps)
            out.append(float(np.sum(xn * yn) / (n_seg * xn.shape[0])))
            continue
        x_norm = np.linalg.norm(xs, axis=2, keepdims=True)
        y_scaled = ys * (x_norm / (np.linalg.norm(ys, axis=2, keepdims=True) + eps))
        y_clip = np.minimum(y_scaled, xs * (1 + 10 ** (-pystoi_stoi.BETA / 20)))
        yc = y_clip - y_clip.mean(axis=2, keepdims=True)
        xc = xs - xs.mean(axis=2, keepdims=True)
        yc /= np.linalg.norm(yc, axis=2, keepdims=True) + eps
        xc /= np.linalg.norm(xc, axis=2, keepdims=True) + eps
        out.append(float(np.sum(xc * yc) / (xs.shape[0] * xs.shape[1])))
    return out


def _row_col_normalize(seg: np.ndarray, eps: float) -> np.ndarray:
    """ESTOI's normalisation of each segment: rows, then columns, to zero mean and unit norm."""
    s = seg - seg.mean(axis=2, keepdims=True)
    s = s / (np.sqrt(np.sum(s * s, axis=2, keepdims=True)) + eps)
    s = s - s.mean(axis=1, keepdims=True)
    return s / (np.sqrt(np.sum(s * s, axis=1, keepdims=True)) + eps)


def _pesq(ref: np.ndarray, est: np.ndarray) -> float:
    from pesq import pesq

    if not np.any(est):
        raise QualityError("estimate is digital silence")
    if not np.any(ref):
        raise QualityError("reference is digital silence")
    return float(pesq(SAMPLE_RATE, ref, est, "wb"))


def score_pair(utt: str, ref: np.ndarray, est: np.ndarray, metrics=METRICS,
               max_len_diff: int = HOP) -> UttScore:
    """Score one utterance; a metric that cannot be computed is recorded as failed."""
    ref, est = align(utt, np.asarray(ref, np.float64), np.asarray(est, np.float64), max_len_diff)
    out = UttScore(utt)
    groups = []  # (metrics, function giving their values): STOI and ESTOI share one pass
    intel = [m for m in ("stoi", "estoi") if m in metrics]
    if intel:
        groups.append((intel, lambda: _intelligibility(ref, est, tuple(m == "estoi" for m in intel))))
    if "pesq" in metrics:
        groups.append((["pesq"], lambda: [_pesq(ref, est)]))
    for names, fn in groups:
        try:
            values = fn()
            for m, value in zip(names, values):
                if not math.isfinite(value):
                    raise QualityError(f"{m} returned {value}")
            out.values.update(zip(names, values))
        except Exception as e:  # noqa: BLE001 - pesq raises several unrelated types; all are kept
            for m in names:
                out.values[m] = float("nan")
                out.errors[m] = f"{type(e).__name__}: {e}"
    out.values = {m: out.values[m] for m in metrics}
    return out


# ---------------------------------------------------------------- utterance lists and jobs

def read_pairs(ref_scp: str | Path, est_scp: str | Path,
               allow_subset: bool = False) -> list[tuple[str, str, str]]:
    """(utt, ref_entry, est_entry) for every estimated utterance, sorted by utt."""
    ref = read_table(ref_scp)
    est = read_table(est_scp)
    if not est:
        raise DataDirError(f"{est_scp}: no utterances")
    unknown = sorted(set(est) - set(ref))
    if unknown:
        raise DataDirError(f"{est_scp}: {len(unknown)} utterances have no reference in "
                           f"{ref_scp} (e.g. '{unknown[0]}')")
    missing = sorted(set(ref) - set(est))
    if missing and not allow_subset:
        raise DataDirError(f"{est_scp}: {len(missing)} utterances of {ref_scp} have no estimate "
                           f"(e.g. '{missing[0]}'); give --allow_subset to score only those present")
    return [(u, ref[u], est[u]) for u in sorted(est)]


def shard_digest(items: list[tuple[str, str, str]], metrics, max_len_diff: int) -> str:
    h = hashlib.sha1(json.dumps([list(metrics), max_len_diff, SAMPLE_RATE]).encode())
    for utt, r, e in items:
        h.update(f"{utt}\t{entry_fingerprint(r)}\t{entry_fingerprint(e)}\n".encode())
    return h.hexdigest()


def job_file(out_dir: str | Path, nj: int, job: int) -> Path:
    return Path(out_dir) / f"split{nj}" / f"scores.{job}.jsonl"


def _read_job(path: Path) -> tuple[dict, list[dict]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise QualityError(f"{path}: empty job file")
    return json.loads(lines[0]), [json.loads(x) for x in lines[1:]]


def run_job(ref_scp, est_scp, out_dir, nj: int = 1, job: int = 1, metrics=METRICS,
            max_len_diff: int = HOP, allow_subset: bool = False) -> dict:
    """Score the job-th of nj shards; skipped when its file is already complete and current."""
    items = shard(read_pairs(ref_scp, est_scp, allow_subset), nj, job)
    digest = shard_digest(items, metrics, max_len_diff)
    path = job_file(out_dir, nj, job)
    if path.exists():
        try:
            header, _ = _read_job(path)
            if header.get("digest") == digest:
                print(f"score_quality job {job}/{nj}: already complete, skipped", file=sys.stderr)
                return {"job": job, "utterances": len(items), "skipped": True}
        except (QualityError, json.JSONDecodeError):
            pass  # unreadable: redo it
    failed = 0
    with atomic_open(path) as f, blas_threads(1):
        header = {"digest": digest, "nj": nj, "job": job, "metrics": list(metrics)}
        f.write(json.dumps(header) + "\n")
        for utt, ref_entry, est_entry in tqdm(items, desc=f"quality job {job}/{nj}",
                                              file=sys.stderr, mininterval=2):
            ref = load_audio(utt, ref_entry)
            est = load_audio(utt, est_entry)
            res = score_pair(utt, ref, est, metrics, max_len_diff)
            failed += bool(res.errors)
            f.write(json.dumps({"utt": utt, **{m: _json_float(v) for m, v in res.values.items()},
                                "errors": res.errors}) + "\n")
    return {"job": job, "utterances": len(items), "with_failures": failed}


def _json_float(v: float):
    return None if not math.isfinite(v) else v


def summarize(values: np.ndarray, level: float = 0.95) -> dict:
    """Mean, sample std and a t-interval for the mean (None where n is too small)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    n = int(values.size)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = float(values.mean())
    if n < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": n}
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def merge(ref_scp, est_scp, out_dir, nj: int = 1, metrics=METRICS, max_len_diff: int = HOP,
          allow_subset: bool = False) -> dict:
    """Join finished jobs into per-utterance score files and summary.json."""
    out_dir = Path(out_dir)
    pairs = read_pairs(ref_scp, est_scp, allow_subset)
    rows: list[dict] = []
    for job in range(1, nj + 1):
        path = job_file(out_dir, nj, job)
        items = shard(pairs, nj, job)
        if not path.exists():
            raise QualityError(f"{path}: missing; job {job} of {nj} has not finished")
        header, job_rows = _read_job(path)
        if header.get("digest") != shard_digest(items, metrics, max_len_diff):
            raise QualityError(f"{path}: made from other inputs or settings than these "
                               f"(stale); re-run job {job}")
        if [r["utt"] for r in job_rows] != [u for u, _, _ in items]:
            raise QualityError(f"{path}: utterances do not match job {job}'s shard")
        rows.extend(job_rows)
    summary: dict = {"n_utts": len(rows), "ref_scp": str(ref_scp), "est_scp": str(est_scp),
                     "metrics": list(metrics), "ci_method": "t-interval of the mean, 95%"}
    for m in metrics:
        with atomic_open(out_dir / m) as f:
            for r in rows:
                v = r.get(m)
                f.write(f"{r['utt']} {'nan' if v is None else repr(float(v))}\n")
        ok = np.array([r[m] for r in rows if r.get(m) is not None], dtype=np.float64)
        failed = {r["utt"]: r["errors"].get(m, "no value") for r in rows if r.get(m) is None}
        summary[m] = {**summarize(ok), "failed": {"count": len(failed), "ids": sorted(failed),
                                                   "reasons": failed}}
    if "pesq" in metrics:
        summary["pesq_failed"] = {"count": summary["pesq"]["failed"]["count"],
                                  "ids": summary["pesq"]["failed"]["ids"]}
    with atomic_open(out_dir / "summary.json") as f:
        json.dump(summary, f, indent=1)
    return summary


def _run_job_star(kwargs: dict) -> dict:
    return run_job(**kwargs)


def score_all(ref_scp, est_scp, out_dir, nj: int = 1, metrics=METRICS, max_len_diff: int = HOP,
              allow_subset: bool = False) -> dict:
    """All nj jobs in local worker processes, then the merge (for use without a job backend)."""
    common = dict(ref_scp=ref_scp, est_scp=est_scp, out_dir=out_dir, nj=nj, metrics=metrics,
                  max_len_diff=max_len_diff, allow_subset=allow_subset)
    if nj == 1:
        run_job(job=1, **common)
    else:
        with ProcessPoolExecutor(max_workers=min(nj, os.cpu_count() or 1)) as pool:
            list(pool.map(_run_job_star, [dict(job=j, **common) for j in range(1, nj + 1)]))
    return merge(ref_scp, est_scp, out_dir, nj, metrics, max_len_diff, allow_subset)


def summary_line(summary: dict) -> str:
    parts = [f"{summary['n_utts']} utts"]
    for m in summary["metrics"]:
        s = summary[m]
        mean = "n/a" if s["mean"] is None else f"{s['mean']:.3f}"
        parts.append(f"{m} {mean} ({s['failed']['count']} failed)")
    return ", ".join(parts)
