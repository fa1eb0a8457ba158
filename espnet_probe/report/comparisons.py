"""Every comparison the report draws, as a paired test (espnet_probe.metrics.paired).

Kinds (``comparison`` column of comparisons.csv), each A - B on the same utterances / trials:
- ``control``: a trained encoder (baseline, robust, brought) vs the randomly initialised
  encoder of the same architecture, per layer and condition: what training changed.
- ``robust_vs_baseline``: the noise-robust model vs the baseline, per layer and condition.
- ``depth``: each layer vs the layer before it, per experiment and condition.
- ``strength``: the probe-strength check.  The ``input`` layer's reconstruction vs the oracle
  (Griffin-Lim of the input log-mel itself: what a perfect probe would give), and a random
  encoder's first layer vs its ``input`` (a random convolution loses almost nothing, so a strong
  probe recovers it).  Until these pass, a layer's failures may be the probe's.

Metrics: stoi, estoi, pesq, mel_l1, mcd (utterances resampled), eer_<encoder> / mindcf_<encoder>
(trials resampled) and speaker_id_acc (held-out utterances' correctness).

comparisons.csv columns: comparison, model, condition, metric, a_training, a_layer, b_training,
b_layer, value_a, value_b, diff (= A - B), ci_low, ci_high (95 % paired bootstrap), p (two-sided
bootstrap), n (paired utterances or trials), significant (the interval excludes 0).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from espnet_probe.experiments import ORACLE_MODEL, ORIGINAL_MODEL, TRAINING_ORDER, Experiment
from espnet_probe.metrics.paired import (PairedTestError, paired_mean_difference,
                                         paired_verification_difference)
from espnet_probe.report.results import condition_namer
from espnet_probe.scoring.layer_scores import read_scores
from espnet_probe.utils.fileio import atomic_open

COMPARISON_COLUMNS = ("comparison", "model", "condition", "metric", "a_training", "a_layer",
                      "b_training", "b_layer", "value_a", "value_b", "diff", "ci_low", "ci_high",
                      "p", "n", "significant")
UTTERANCE_METRICS = {"stoi": "quality", "estoi": "quality", "pesq": "quality",
                     "mel_l1": "mel", "mcd": "mel"}
SPEAKER_ID = "speaker_id_acc"
# The probe-strength check's thresholds (STOI): the input probe within 0.01 of the oracle, a
# random encoder's first layer within 0.03 of its input.
INPUT_VS_ORACLE_STOI = 0.01
RANDOM_FIRST_VS_INPUT_STOI = 0.03


def scored_experiment(scores_csv: Path) -> Experiment | None:
    """The probe (or oracle) experiment a ``scores.csv`` scores, with the sets it scored; None
    for the original audio, which has no layers to compare."""
    rows = read_scores(Path(scores_csv))
    if not rows or rows[0]["model"] == ORIGINAL_MODEL:
        return None
    kind = "oracle" if rows[0]["model"] == ORACLE_MODEL else "probe"
    return Experiment(kind, str(Path(scores_csv).parent), rows[0]["model"], rows[0]["training"],
                      sets=tuple(dict.fromkeys(r["set"] for r in rows)))


def scored_layers(exp: Experiment) -> tuple[str, ...]:
    """The layers of an experiment's ``scores.csv``, in layer order."""
    index = {r["layer"]: int(r["layer_index"]) for r in read_scores(Path(exp.dir) / "scores.csv")}
    return tuple(sorted(index, key=index.get))


def _job_dir(exp: Experiment, set_name: str, layer: str) -> Path:
    return Path(exp.dir) / f"score_{set_name}" / layer


def utterance_values(exp: Experiment, set_name: str, layer: str, metric: str) -> dict[str, float] | None:
    path = _job_dir(exp, set_name, layer) / UTTERANCE_METRICS[metric] / metric
    if not path.is_file():
        return None
    values = {}
    for line in path.read_text().splitlines():
        utt, value = line.split()
        values[utt] = float(value)
    return values


def trial_scores(exp: Experiment, set_name: str, layer: str, encoder: str):
    """(trial keys, scores, labels) of ``speaker_<encoder>/scores``, or None."""
    path = _job_dir(exp, set_name, layer) / f"speaker_{encoder}" / "scores"
    if not path.is_file():
        return None
    keys, scores, labels = [], [], []
    for line in path.read_text().splitlines():
        a, b, s, kind = line.split()
        keys.append((a, b))
        scores.append(float(s))
        labels.append(kind == "target")
    return keys, np.array(scores), np.array(labels)


def speaker_id_correct(results_dir: Path) -> dict[str, dict[str, float]]:
    """{layer: {utt: 1.0 | 0.0}} from a speaker-ID probe's per_utterance.csv."""
    out: dict[str, dict[str, float]] = {}
    path = Path(results_dir) / "per_utterance.csv"
    with open(path, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault(r["layer"], {})[r["utt"]] = float(r["correct"])
    return out


def _row(kind, model, condition, metric, a, b, result) -> dict:
    def num(x):
        return round(x, 6) if isinstance(x, float) and math.isfinite(x) else x
    return {"comparison": kind, "model": model, "condition": condition, "metric": metric,
            "a_training": a[0], "a_layer": a[1], "b_training": b[0], "b_layer": b[1],
            "value_a": num(result.value_a), "value_b": num(result.value_b),
            "diff": num(result.diff), "ci_low": num(result.ci_low), "ci_high": num(result.ci_high),
            "p": num(result.p), "n": result.n, "significant": int(result.significant)}


class Comparer:
    def __init__(self, n_boot: int = 1000, seed: int = 0, encoders: tuple[str, ...] = ("ge2e", "resnet")):
        self.n_boot, self.seed, self.encoders = n_boot, seed, encoders

    def pair(self, kind: str, model: str, set_name: str, condition: str,
             a: tuple[Experiment, str], b: tuple[Experiment, str]) -> list[dict]:
        """Every metric both sides have for (experiment, layer) A and B on one set."""
        (ea, la), (eb, lb) = a, b
        names = ((ea.training, la), (eb.training, lb))
        rows = []
        for metric in UTTERANCE_METRICS:
            va, vb = utterance_values(ea, set_name, la, metric), utterance_values(eb, set_name, lb, metric)
            if va is None or vb is None:
                continue
            # failed utterances (nan) are left out on both sides, so the pairs stay pairs
            utts = sorted(u for u in set(va) & set(vb) if math.isfinite(va[u]) and math.isfinite(vb[u]))
            try:
                result = paired_mean_difference([va[u] for u in utts], [vb[u] for u in utts],
                                                self.n_boot, self.seed)
            except PairedTestError:
                continue
            rows.append(_row(kind, model, condition, metric, *names, result))
        for encoder in self.encoders:
            ta, tb = trial_scores(ea, set_name, la, encoder), trial_scores(eb, set_name, lb, encoder)
            if ta is None or tb is None:
                continue
            if ta[0] != tb[0]:
                raise PairedTestError(f"{_job_dir(ea, set_name, la)} and {_job_dir(eb, set_name, lb)} "
                                      f"were scored on different trial lists")
            results = paired_verification_difference(ta[1], tb[1], ta[2], self.n_boot, self.seed)
            for stat, result in results.items():
                rows.append(_row(kind, model, condition, f"{stat}_{encoder}", *names, result))
        return rows

    def speaker_id(self, kind: str, model: str, a: tuple[str, str, dict], b: tuple[str, str, dict]
                   ) -> list[dict]:
        (ta, la, va), (tb, lb, vb) = a, b
        utts = sorted(set(va) & set(vb))
        if set(va) != set(vb):
            raise PairedTestError(f"speaker-ID probes of {model} {ta} and {tb} held out different "
                                  "utterances")
        result = paired_mean_difference([100 * va[u] for u in utts], [100 * vb[u] for u in utts],
                                        self.n_boot, self.seed)
        return [_row(kind, model, "clean", SPEAKER_ID, (ta, la), (tb, lb), result)]


def compare_all(experiments: list[Experiment], speaker_id: list[tuple[str, str, Path]] = (),
                n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Rows of comparisons.csv for every comparison kind the experiments allow."""
    comparer = Comparer(n_boot, seed)
    name = condition_namer({s for e in experiments for s in e.sets})
    layers_of = {e.dir: scored_layers(e) for e in experiments}
    oracle = next((e for e in experiments if e.kind == "oracle"), None)
    probes = sorted((e for e in experiments if e.kind != "oracle"),
                    key=lambda e: (e.model, TRAINING_ORDER.get(e.training, 9)))
    by_model: dict[str, dict[str, Experiment]] = {}
    for e in probes:
        by_model.setdefault(e.model, {})[e.training] = e
    rows: list[dict] = []

    def both(kind, model, a_exp, a_layer, b_exp, b_layer):
        for s in a_exp.sets:
            if s in b_exp.sets and a_layer in layers_of[a_exp.dir] and b_layer in layers_of[b_exp.dir]:
                rows.extend(comparer.pair(kind, model, s, name(s), (a_exp, a_layer), (b_exp, b_layer)))

    for model, exps in by_model.items():
        random = exps.get("random")
        random_layers = layers_of[random.dir] if random is not None else ()
        for training, e in exps.items():
            if training == "random":
                continue
            if random is not None:
                for layer in layers_of[e.dir]:
                    both("control", model, e, layer, random, layer)
        if "robust" in exps and "baseline" in exps:
            for layer in layers_of[exps["robust"].dir]:
                both("robust_vs_baseline", model, exps["robust"], layer, exps["baseline"], layer)
        for e in exps.values():
            for prev, layer in zip(layers_of[e.dir], layers_of[e.dir][1:]):
                both("depth", model, e, layer, e, prev)
            if oracle is not None and "input" in layers_of[e.dir]:
                for s in e.sets:
                    if s in oracle.sets:
                        rows.extend(comparer.pair("strength", model, s, name(s), (e, "input"),
                                                  (oracle, layers_of[oracle.dir][0])))
        if len(random_layers) > 1 and random_layers[0] == "input":
            both("strength", model, random, random_layers[1], random, "input")

    sid = {(m, t): speaker_id_correct(Path(p).parent) for m, t, p in speaker_id}
    for (model, training), layers in sid.items():
        order = list(layers)
        if training != "random" and (model, "random") in sid:
            random = sid[(model, "random")]
            for layer in order:
                if layer in random:
                    rows.extend(comparer.speaker_id("control", model, (training, layer, layers[layer]),
                                                    ("random", layer, random[layer])))
        if training == "robust" and (model, "baseline") in sid:
            base = sid[(model, "baseline")]
            for layer in order:
                if layer in base:
                    rows.extend(comparer.speaker_id("robust_vs_baseline", model,
                                                    (training, layer, layers[layer]),
                                                    ("baseline", layer, base[layer])))
        for prev, layer in zip(order, order[1:]):
            rows.extend(comparer.speaker_id("depth", model, (training, layer, layers[layer]),
                                            (training, prev, layers[prev])))
    return rows


def write_comparisons(path: Path, rows: list[dict]) -> None:
    with atomic_open(path) as f:
        w = csv.DictWriter(f, fieldnames=COMPARISON_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def read_comparisons(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
