"""Score every layer's reconstruction of one experiment: audio quality, speaker verification,
mel distances, all written per (condition, layer) and gathered into ``<exp>/scores.csv``.

Jobs come from a probe experiment (``decode_<set>/<layer>/wav.scp`` from vocoding,
``mel.scp`` from probe decoding) or from the data dirs themselves (the unprocessed audio of
every condition: model ``original``, layer ``audio``). For each job, under
``<exp>/score_<set>/<layer>/``:

- ``quality/``: STOI, ESTOI, wideband PESQ against the clean utterance (metrics.quality; failed
  PESQ utterances are counted, never dropped);
- ``<encoder>/``: speaker-verification EER and minDCF with bootstrap CIs on the shared trial list
  of the test set (speaker.embedder.score_speaker), for GE2E and, when given, the ThinResNet;
- ``mel/``: per-utterance L1 and MCD of the predicted log-mel against the clean log-mel, over
  every decoded utterance (not only the vocoded ones: it is cheap).

Why one process per experiment: interpreter and model start-up (2-10 s) dwarfs the work of one
layer, so the speaker encoders embed the audio of *all* jobs in one call, and quality scoring runs
all jobs through one worker pool. Every piece is cached by a digest of its inputs, so a re-run
redoes only what changed (a re-vocoded layer, a new trial list).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
from tqdm import tqdm

from espnet_probe.experiments import TRAINING_ORDER, read_experiment
from espnet_probe.metrics.mel import mcd_per_frame, mel_l1
from espnet_probe.metrics.quality import merge, run_job, summarize
from espnet_probe.metrics.trials import Trials
from espnet_probe.probe.summary import DecodeSummaryError, decode_summaries
from espnet_probe.speaker.embedder import (Embedder, entries_digest, load_embeddings,
                                           save_embeddings, score_speaker, trial_entries)
from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.kaldi_dir import DataDirError, read_table

SCORE_COLUMNS = ("model", "training", "set", "layer", "layer_index", "metric", "value", "ci_low", "ci_high", "n")
_SNR_SET = re.compile(r"^(?P<test>.+)_snr(?P<snr>-?\d+)$")


class LayerScoringError(RuntimeError):
    pass


def probe_exp_labels(exp: Path) -> tuple[str, str]:
    """(model, training) of a probe experiment: from its record (espnet_probe/experiments.py),
    else from its ``scores.csv`` once scored, else from the naming ``probe_<model>_<training>``
    of dirs made before records existed (``probe_oracle`` -> ``("oracle", "")``)."""
    record = read_experiment(exp)
    if record and record.get("kind") == "probe":
        return record["model"], record["training"]
    scores = Path(exp) / "scores.csv"
    if scores.is_file():
        rows = read_scores(scores)
        if rows:
            return rows[0]["model"], rows[0]["training"]
    stem = Path(exp).name.removeprefix("probe_")
    model, _, training = stem.rpartition("_")
    return (model, training) if model and training in TRAINING_ORDER else (stem, "")


def split_condition(set_name: str) -> tuple[str, str]:
    """``test_snr10`` -> (``test``, ``snr10``); a set without an SNR suffix is ``clean``."""
    m = _SNR_SET.match(set_name)
    return (m["test"], f"snr{m['snr']}") if m else (set_name, "clean")


@dataclass(frozen=True)
class ScoreJob:
    set_name: str          # the decoded condition, e.g. test_snr10
    layer: str
    layer_index: int       # 0 = the input features
    wav_scp: Path | None   # audio to score (None: not vocoded)
    mel_scp: Path | None   # predicted log-mel (None: real audio, nothing predicted)
    out_dir: Path

    @property
    def test_set(self) -> str:
        return split_condition(self.set_name)[0]

    @property
    def condition(self) -> str:
        return split_condition(self.set_name)[1]


def probe_exp_jobs(exp: Path) -> list[ScoreJob]:
    """One job per decoded layer and condition, in the layer order of probe decoding."""
    exp = Path(exp)
    try:
        summaries = decode_summaries(exp)
    except DecodeSummaryError as e:
        raise LayerScoringError(str(e)) from None
    jobs = []
    for summary in summaries:
        for decoded in summary.layers:
            layer = decoded.layer
            wav_scp = summary.wav_scp(layer.name)
            jobs.append(ScoreJob(summary.set_name, layer.name, layer.index,
                                 wav_scp if wav_scp.is_file() else None, summary.mel_scp(layer.name),
                                 exp / f"score_{summary.set_name}" / layer.name))
    return jobs


def original_audio_jobs(data: Path, set_names: list[str], out: Path,
                        utts_by_test: dict[str, list[str]]) -> list[ScoreJob]:
    """The unprocessed audio of each condition, restricted to the scored utterances."""
    jobs = []
    for set_name in set_names:
        scp = read_table(Path(data) / set_name / "wav.scp")
        utts = utts_by_test[split_condition(set_name)[0]]
        missing = [u for u in utts if u not in scp]
        if missing:
            raise LayerScoringError(f"{data}/{set_name}/wav.scp lacks {len(missing)} scored "
                                    f"utterances, e.g. {missing[:3]}")
        job_dir = Path(out) / f"score_{set_name}" / "audio"
        subset = job_dir / "wav.scp"
        text = "".join(f"{u} {scp[u]}\n" for u in utts)
        if not subset.is_file() or subset.read_text() != text:  # keep mtime: cached digests
            with atomic_open(subset) as f:
                f.write(text)
        jobs.append(ScoreJob(set_name, "audio", 0, subset, None, job_dir))
    return jobs


# ---------------------------------------------------------------- quality

def _quality_job(args: tuple[str, str, str]) -> dict:
    ref_scp, est_scp, out_dir = args
    run_job(ref_scp, est_scp, out_dir, allow_subset=True)
    return merge(ref_scp, est_scp, out_dir, allow_subset=True)


def score_quality_jobs(jobs: list[ScoreJob], data: Path, nj: int) -> dict[ScoreJob, dict]:
    """STOI/ESTOI/PESQ of every job's audio against data/<test>/wav.scp, ``nj`` jobs at once."""
    todo = [j for j in jobs if j.wav_scp is not None]
    args = [(str(Path(data) / j.test_set / "wav.scp"), str(j.wav_scp), str(j.out_dir / "quality"))
            for j in todo]
    if nj <= 1:
        results = [_quality_job(a) for a in tqdm(args, desc="quality", file=sys.stderr)]
    else:
        with ProcessPoolExecutor(max_workers=nj) as pool:
            results = list(tqdm(pool.map(_quality_job, args), total=len(args), desc="quality",
                                file=sys.stderr))
    return dict(zip(todo, results))


# ---------------------------------------------------------------- speaker verification

def score_speaker_jobs(jobs: list[ScoreJob], trials: dict[str, Trials], embedder: Embedder,
                       subdir: str, nj: int, n_boot: int, seed: int) -> dict[ScoreJob, dict]:
    """EER/minDCF of every job's audio on its test set's trials. Embeddings of all stale jobs
    are computed in a single call (one encoder start-up, ``nj`` workers), then cached."""
    todo = [j for j in jobs if j.wav_scp is not None]
    stale: list[tuple[ScoreJob, list[tuple[str, str]], str]] = []
    for j in todo:
        entries = trial_entries(j.wav_scp, trials[j.test_set])
        digest = entries_digest(entries, embedder.tag)
        if load_embeddings(j.out_dir / subdir / "embeddings.npz", digest) is None:
            stale.append((j, entries, digest))
    if stale:
        # keys name the job, so an audio error says which layer and condition it came from
        keyed = [(f"{j.set_name}/{j.layer}/{u}", e) for j, entries, _ in stale for u, e in entries]
        print(f"{subdir}: embedding {len(keyed)} utterances of {len(stale)} layer x condition "
              f"jobs", file=sys.stderr)
        _, emb, status = embedder.embed(keyed, nj)
        start = 0
        for j, entries, digest in stale:
            n = len(entries)
            save_embeddings(j.out_dir / subdir / "embeddings.npz", [u for u, _ in entries],
                            emb[start:start + n], status[start:start + n], digest)
            start += n
    return {j: score_speaker(j.wav_scp, trials[j.test_set], j.out_dir / subdir, 1, n_boot, seed,
                             embedder=embedder) for j in todo}


# ---------------------------------------------------------------- mel distances

def score_mel_job(job: ScoreJob, feats_root: Path) -> dict:
    """Per-utterance L1 and MCD of the predicted log-mel against the clean log-mel."""
    target_scp = Path(feats_root) / job.set_name / "target.scp"
    targets = read_table(target_scp)
    preds = read_table(job.mel_scp)
    missing = sorted(set(preds) - set(targets))
    if missing:
        raise DataDirError(f"{job.mel_scp}: {len(missing)} utterances have no clean target in "
                           f"{target_scp}, e.g. {missing[:3]}")
    per_utt = {"mel_l1": {}, "mcd": {}}
    for utt in sorted(preds):
        pred, ref = kaldiio.load_mat(preds[utt]), kaldiio.load_mat(targets[utt])
        name = f"{job.set_name}/{job.layer}/{utt}"
        per_utt["mel_l1"][utt] = mel_l1(pred, ref, name=name)
        per_utt["mcd"][utt] = float(np.mean(mcd_per_frame(pred, ref, name=name)))
    out = job.out_dir / "mel"
    summary = {"n_utts": len(preds), "mel_scp": str(job.mel_scp), "target_scp": str(target_scp),
               "units": {"mel_l1": "natural-log mel magnitude", "mcd": "dB"},
               "ci_method": "t-interval of the mean, 95%"}
    for metric, values in per_utt.items():
        with atomic_open(out / metric) as f:
            f.writelines(f"{u} {v!r}\n" for u, v in values.items())
        summary[metric] = summarize(np.array(list(values.values())))
    with atomic_open(out / "summary.json") as f:
        json.dump(summary, f, indent=1)
    return summary


# ---------------------------------------------------------------- rows of scores.csv

def _row(job: ScoreJob, metric: str, value, ci=None, n: int | None = None) -> dict:
    def fmt(x):
        return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else x
    lo, hi = ci if ci else (None, None)
    return {"set": job.set_name, "layer": job.layer, "layer_index": job.layer_index,
            "metric": metric, "value": fmt(value), "ci_low": fmt(lo), "ci_high": fmt(hi),
            "n": "" if n is None else n}


def quality_rows(job: ScoreJob, summary: dict) -> list[dict]:
    rows = []
    for m in summary["metrics"]:
        s = summary[m]
        rows.append(_row(job, m, s["mean"], s["ci95"], s["n"]))
        rows.append(_row(job, f"{m}_failed", s["failed"]["count"], None, summary["n_utts"]))
    return rows


def speaker_rows(job: ScoreJob, result: dict, name: str) -> list[dict]:
    n = result["n_target"] + result["n_nontarget"]
    return [_row(job, f"eer_{name}", result["eer"], result["eer_ci"], n),
            _row(job, f"mindcf_{name}", result["mindcf"], result["mindcf_ci"], n)]


def mel_rows(job: ScoreJob, summary: dict) -> list[dict]:
    return [_row(job, m, summary[m]["mean"], summary[m]["ci95"], summary[m]["n"])
            for m in ("mel_l1", "mcd")]


def write_scores(path: Path, rows: list[dict], model: str, training: str) -> None:
    with atomic_open(path) as f:
        w = csv.DictWriter(f, fieldnames=SCORE_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows({"model": model, "training": training, **r} for r in rows)


def read_scores(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and tuple(rows[0]) != SCORE_COLUMNS:
        raise LayerScoringError(f"{path}: columns {tuple(rows[0])}, expected {SCORE_COLUMNS}")
    return rows


def score_jobs(jobs: list[ScoreJob], data: Path, feats_root: Path, trials: dict[str, Trials],
               embedders: dict[str, Embedder], nj: int = 1, n_boot: int = 1000,
               seed: int = 0) -> list[dict]:
    """Everything for these jobs; returns the rows of scores.csv (quality, speaker, mel)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows: dict[ScoreJob, list[dict]] = {j: [] for j in jobs}
    for job, summary in score_quality_jobs(jobs, data, nj).items():
        rows[job] += quality_rows(job, summary)
    for name, embedder in embedders.items():
        for job, result in score_speaker_jobs(jobs, trials, embedder, f"speaker_{name}", nj,
                                              n_boot, seed).items():
            rows[job] += speaker_rows(job, result, name)
    for job in tqdm([j for j in jobs if j.mel_scp is not None], desc="mel", file=sys.stderr):
        rows[job] += mel_rows(job, score_mel_job(job, feats_root))
    return [r for j in jobs for r in rows[j]]
