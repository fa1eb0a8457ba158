"""A static demo page: listen to (and look at) what every layer of every probed encoder keeps.

For each probe experiment of the run's plan (espnet_probe/experiments.py) and condition, one
table: a row per layer in encoder order (after the unprocessed audio of the condition and
Griffin-Lim of the input log-mel, the plan's oracle), a column per sample utterance. Every cell
holds an audio player and a small log-mel image (the audio's log-mel for the original audio,
the predicted log-mel otherwise), one colour scale per table. Tables of one condition share their
utterances, picked seeded among the vocoded ones, spread over speakers.

The page opens from disk: the sample wavs sit in ``<out>/audio`` (hard links when possible) and
the images in ``<out>/img``, all linked relatively from ``<out>/index.html``.
"""

from __future__ import annotations

import html
import math
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import kaldiio
import numpy as np
from tqdm import tqdm

from espnet_probe.audio.io import load_utterance, write_wav
from espnet_probe.experiments import EXPERIMENT_FILE, TRAINING_ORDER, probe_experiments, select
from espnet_probe.report.results import condition_namer, conditions_in
from espnet_probe.scoring.layer_scores import ScoreJob, probe_exp_jobs
from espnet_probe.utils.fileio import atomic_dir
from espnet_probe.utils.kaldi_dir import load_data_dir, read_table

MAX_IMAGE_FRAMES = 240  # longer mels are mean-pooled in time: thumbnails, not figures
CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 4px; vertical-align: middle; }
th.layer { text-align: right; font-weight: normal; white-space: nowrap; }
tr.reference th.layer { font-style: italic; }
td img { display: block; width: 240px; height: 64px; }
td audio { width: 240px; height: 32px; }
.utt { font-size: 0.8em; font-weight: normal; max-width: 240px; }
nav ul { margin: 0.2em 0; }
"""


class DemoError(RuntimeError):
    pass


def choose_utterances(candidates: list[str], utt2spk: dict[str, str], n: int,
                      seed: int) -> list[str]:
    """``n`` utterances, one per speaker in a seeded speaker order before any speaker repeats."""
    rng = random.Random(seed)
    by_spk: dict[str, list[str]] = {}
    for utt in sorted(candidates):
        by_spk.setdefault(utt2spk[utt], []).append(utt)
    queues = [by_spk[s] for s in sorted(by_spk)]
    rng.shuffle(queues)
    for q in queues:
        rng.shuffle(q)
    chosen: list[str] = []
    depth = 0
    while len(chosen) < n and any(depth < len(q) for q in queues):
        chosen += [q[depth] for q in queues if depth < len(q)][:n - len(chosen)]
        depth += 1
    return sorted(chosen)


@dataclass
class Row:
    name: str
    reference: bool
    audio: dict[str, Path]       # utt -> wav inside the demo dir
    mel: dict[str, np.ndarray]   # utt -> (frames, n_mels)


@dataclass
class Table:
    model: str
    training: str
    condition: str
    exp_dir: Path
    set_name: str
    rows: list[Row]


def _vocoded_audio(decode_dir: Path, job: ScoreJob, utts: list[str]) -> dict[str, Path]:
    where = decode_dir / job.layer
    if job.wav_scp is None:
        raise DemoError(f"{where}: no wav.scp, the layer was not vocoded (run the vocode stage)")
    scp = read_table(job.wav_scp)
    audio = {}
    for utt in utts:
        if utt not in scp:
            raise DemoError(f"{where}/{utt}: utterance missing from {job.wav_scp}")
        path = Path(scp[utt])
        if not path.is_file():
            raise DemoError(f"{where}/{utt}: vocoded wav {path} not found")
        audio[utt] = path
    return audio


def _predicted_mel(decode_dir: Path, job: ScoreJob, utts: list[str]) -> dict[str, np.ndarray]:
    scp = read_table(job.mel_scp)
    missing = [u for u in utts if u not in scp]
    if missing:
        raise DemoError(f"{decode_dir / job.layer}/{missing[0]}: utterance missing from "
                        f"{job.mel_scp}")
    return {u: np.asarray(kaldiio.load_mat(scp[u])) for u in utts}


def _place(src: Path, dst: Path) -> Path:
    """Hard-link ``src`` to ``dst`` (copy across filesystems); returns ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def _save_mel_png(mel: np.ndarray, path: Path, vmin: float, vmax: float) -> None:
    from matplotlib.image import imsave  # no figure, no backend: one pixel per value

    step = max(1, math.ceil(mel.shape[0] / MAX_IMAGE_FRAMES))
    if step > 1:
        kept = mel.shape[0] // step * step
        mel = mel[:kept].reshape(kept // step, step, mel.shape[1]).mean(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, mel.T, vmin=vmin, vmax=vmax, cmap="magma", origin="lower",
           format="png")


def _url(path: Path, root: Path) -> str:
    return html.escape(quote(path.relative_to(root).as_posix()))


class _Collector:
    """Gathers the tables' contents into the (temporary) demo dir."""

    def __init__(self, out: Path, fbank_config: Path):
        self.out, self.fbank_config = out, fbank_config
        self.extractor = None

    def original_row(self, set_name: str, data, utts: list[str]) -> Row:
        from espnet_probe.audio.features import FbankConfig, LogMelExtractor  # torch

        if self.extractor is None:
            self.extractor = LogMelExtractor(FbankConfig.from_yaml(self.fbank_config))
        audio, mel = {}, {}
        for utt in utts:
            wav = load_utterance(data, utt)
            # re-written rather than linked: the data dir may hold pipes or segments
            audio[utt] = self.out / "audio" / "reference" / set_name / "original" / f"{utt}.wav"
            write_wav(audio[utt], wav)
            mel[utt] = self.extractor.log_mel(wav).numpy()
        return Row("original audio", True, audio, mel)

    def probe_row(self, name: str, reference: bool, decode_dir: Path, job: ScoreJob,
                  utts: list[str], audio_dir: Path) -> Row:
        audio = {u: _place(p, audio_dir / f"{u}.wav")
                 for u, p in _vocoded_audio(decode_dir, job, utts).items()}
        return Row(name, reference, audio, _predicted_mel(decode_dir, job, utts))


def _jobs_by_set(exp_dir: Path) -> dict[str, list[ScoreJob]]:
    jobs: dict[str, list[ScoreJob]] = {}
    for job in probe_exp_jobs(exp_dir):
        jobs.setdefault(job.set_name, []).append(job)
    return jobs


def _vocoded_utts(decode_dir: Path) -> set[str]:
    path = decode_dir / "vocoded_utts"
    if not path.is_file():
        raise DemoError(f"{path}: not found (run the vocode stage)")
    return set(path.read_text().split())


def _sample_utts(set_name: str, decode_dirs: list[Path], data, n: int, seed: int) -> list[str]:
    """The utterances of a condition's tables: vocoded in every one of its decode dirs."""
    candidates = set.intersection(*(_vocoded_utts(d) for d in decode_dirs))
    if not candidates:
        raise DemoError(f"{set_name}: no utterance is vocoded in all of "
                        f"{', '.join(map(str, decode_dirs))}")
    unknown = sorted(candidates - set(data.utt2spk))
    if unknown:
        raise DemoError(f"{set_name}: vocoded utterance '{unknown[0]}' is not in the data dir's "
                        "utt2spk")
    return choose_utterances(sorted(candidates), data.utt2spk, n, seed)


def build_demo(exp_root: Path, data_root: Path, out: Path, utts_per_table: int = 3,
               sets: list[str] | None = None, exps: list[str] | None = None, seed: int = 0,
               fbank_config: Path = Path("conf/fbank.yaml")) -> dict:
    """Write ``out/index.html`` with its audio and images, replacing ``out`` whole on success."""
    if utts_per_table < 1:
        raise DemoError(f"utts_per_table must be >= 1, got {utts_per_table}")
    exp_root, data_root, out = Path(exp_root), Path(data_root), Path(out)
    records = probe_experiments(exp_root, exps)
    probe_exps = {Path(e.dir): _jobs_by_set(Path(e.dir)) for e in records}
    labels = {Path(e.dir): (e.model, e.training) for e in records}
    oracle_dir = next((Path(e.dir) for e in select(exp_root, kind="oracle")), None)
    oracle = _jobs_by_set(oracle_dir) if oracle_dir is not None else {}
    chosen = set(sets) if sets else {s for jobs in probe_exps.values() for s in jobs}
    for e, jobs in probe_exps.items():
        missing = sorted(s for s in sets or [] if s not in jobs)
        if missing:
            raise DemoError(f"{e}/decode_{missing[0]}: not found (not decoded; drop it from "
                            "--sets)")
    name_of = condition_namer(chosen)
    order = conditions_in([{"condition": name_of(s)} for s in chosen])
    set_names = sorted(chosen, key=lambda s: order.index(name_of(s)))

    tables: list[Table] = []
    texts = {}  # set -> (utt2spk, text) for the column headers
    n_tables = sum(s in jobs for jobs in probe_exps.values() for s in set_names)
    with atomic_dir(out) as tmp:
        collector = _Collector(tmp, Path(fbank_config))
        with tqdm(total=n_tables, desc="demo tables", file=sys.stderr) as progress:
            for set_name in set_names:
                data = load_data_dir(data_root / set_name, require_text=False)
                texts[set_name] = (data.utt2spk, data.text)
                decode_dirs = [e / f"decode_{set_name}" for e, jobs in probe_exps.items()
                               if set_name in jobs]
                oracle_jobs = oracle.get(set_name, [])
                if oracle_jobs:
                    decode_dirs.append(oracle_dir / f"decode_{set_name}")
                utts = _sample_utts(set_name, decode_dirs, data, utts_per_table, seed)
                refs = [collector.original_row(set_name, data, utts)]
                refs += [collector.probe_row("oracle (Griffin-Lim of input mel)", True,
                                             oracle_dir / f"decode_{set_name}", job, utts,
                                             tmp / "audio" / "reference" / set_name / "oracle")
                         for job in oracle_jobs]
                for exp_dir, jobs in probe_exps.items():
                    decode_dir = exp_dir / f"decode_{set_name}"
                    rows = [collector.probe_row(job.layer, False, decode_dir, job, utts,
                                                tmp / "audio" / "probe" / exp_dir.name
                                                / set_name / job.layer)
                            for job in sorted(jobs.get(set_name, []), key=lambda j: j.layer_index)]
                    if rows:
                        model, training = labels[exp_dir]
                        tables.append(Table(model, training, name_of(set_name), exp_dir,
                                            set_name, refs + rows))
                        progress.update()
        tables.sort(key=lambda t: (t.model, TRAINING_ORDER.get(t.training, 9), t.exp_dir.name,
                                   order.index(t.condition)))
        (tmp / "index.html").write_text(_render(tables, tmp, texts, seed), encoding="utf-8")
        if (out / EXPERIMENT_FILE).is_file():  # the demo's record stays with its dir
            shutil.copy2(out / EXPERIMENT_FILE, tmp / EXPERIMENT_FILE)
    n_cells = sum(len(r.audio) for t in tables for r in t.rows)
    return {"tables": len(tables), "cells": n_cells, "sets": set_names,
            "exps": [e.name for e in probe_exps], "oracle": bool(oracle)}


def _table_html(table: Table, index: int, root: Path, utt2spk: dict[str, str],
                text: dict[str, str]) -> list[str]:
    utts = list(table.rows[0].audio)
    mels = [m for r in table.rows for m in r.mel.values()]
    vmin, vmax = min(float(m.min()) for m in mels), max(float(m.max()) for m in mels)
    e = html.escape
    title = " / ".join(x for x in (table.model, table.training, table.condition) if x)
    out = [f'<section id="t{index}">',
           f"<h2>{e(title)}</h2>",
           f"<p>{e(str(table.exp_dir / f'decode_{table.set_name}'))}; log-mel colour scale "
           f"{vmin:.1f} to {vmax:.1f} (ln mel) for every image of this table.</p>",
           "<table>", "<tr><th>layer</th>"]
    for utt in utts:
        caption = f"{e(utt)} <br>speaker {e(utt2spk[utt])}"
        if text.get(utt):
            caption += f"<br><q>{e(text[utt])}</q>"
        out.append(f'<th class="utt">{caption}</th>')
    out.append("</tr>")
    for k, row in enumerate(table.rows):
        out.append(f'<tr class="{"reference" if row.reference else "layer"}">'
                   f'<th class="layer">{e(row.name)}</th>')
        for utt in utts:
            png = root / "img" / f"t{index}" / f"{k:02d}" / f"{utt}.png"
            _save_mel_png(row.mel[utt], png, vmin, vmax)
            alt = f"log-mel of {utt}, {row.name}"
            out.append(f'<td><img src="{_url(png, root)}" alt="{e(alt)}">'
                       f'<audio controls preload="none" src="{_url(row.audio[utt], root)}">'
                       f"</audio></td>")
        out.append("</tr>")
    out += ["</table>", "</section>"]
    return out


def _render(tables: list[Table], root: Path, texts: dict, seed: int) -> str:
    e = html.escape
    nav = ["<nav><ul>"]
    body = []
    for model in dict.fromkeys(t.model for t in tables):
        nav.append(f"<li>{e(model)}<ul>")
        for training in dict.fromkeys(t.training for t in tables if t.model == model):
            links = [f'<a href="#t{i}">{e(t.condition)}</a>' for i, t in enumerate(tables)
                     if t.model == model and t.training == training]
            nav.append(f"<li>{e(training or '-')}: {' | '.join(links)}</li>")
        nav.append("</ul></li>")
    nav.append("</ul></nav>")
    for i, table in enumerate(tqdm(tables, desc="demo images", file=sys.stderr)):
        body += _table_html(table, i, root, *texts[table.set_name])
    intro = ("Each table: one probe experiment and test condition. Rows: the unprocessed audio "
             "of the condition, Griffin-Lim of its input log-mel (oracle, when present), then "
             "every probed layer in encoder order, reconstructed by its probe and vocoded. "
             f"Columns: sample utterances (seed {seed}), the same in every table of a "
             "condition. Images: log-mel, low frequencies at the bottom.")
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      "<title>What does each layer hear? Demo</title>",
                      f"<style>{CSS}</style>", "</head>", "<body>",
                      "<h1>What does each layer hear?</h1>", f"<p>{e(intro)}</p>", *nav,
                      *body, "</body>", "</html>", ""])
