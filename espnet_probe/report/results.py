"""The report: every score of an experiment in one long table, Markdown tables and PNG plots.

``scores.csv`` columns: model,training,condition,layer,layer_index,metric,value,ci_low,ci_high,n.
- training: baseline | robust for encoders trained here, brought for an ESPnet model trained
  elsewhere (run.sh --asr_exps), random for the randomly initialised control;
  empty for the two references (model ``original`` = the unprocessed audio of the condition,
  model ``oracle`` = Griffin-Lim of the input log-mel itself, the vocoder's ceiling).
- condition: clean | snr<N> (prefixed with the test set, ``<test>:snr10``, when there are several).
- layer_index 0 is the input features; ASR error rates sit on layer ``output`` after the last layer.
- metric: eer_ge2e / eer_resnet (percent), mindcf_* (normalised), stoi, estoi, pesq,
  <metric>_failed (count of utterances where it failed, n = utterances), mel_l1, mcd (dB),
  speaker_id_acc (percent, linear probe on hidden states; condition clean), wer, cer (percent),
  human_error (fraction of listening-test triplets answered wrong, rater x triplet bootstrap CI,
  n = answers; read from ``<expdir>/listening/<name>/scores.csv`` by make_report).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from espnet_probe.experiments import TRAINING_ORDER
from espnet_probe.metrics.trials import read_trials
from espnet_probe.scoring.layer_scores import LayerScoringError, read_scores, split_condition
from espnet_probe.utils.fileio import atomic_open

REPORT_COLUMNS = ("model", "training", "condition", "layer", "layer_index", "metric", "value",
                  "ci_low", "ci_high", "n")
REFERENCE_MODELS = ("original", "oracle")
# (metric, title, unit, digits, lower is better)
METRICS = [
    ("eer_ge2e", "Speaker verification EER, GE2E encoder", "%", 1),
    ("eer_resnet", "Speaker verification EER, ThinResNet + GhostVLAD encoder (stage 10)",
     "%", 1),
    ("human_error", "Human error rate per layer (Fig. 2b)", "", 2),
    ("mindcf_ge2e", "minDCF (p_target 0.01), GE2E", "", 3),
    ("mindcf_resnet", "minDCF (p_target 0.01), ThinResNet", "", 3),
    ("stoi", "STOI against the clean utterance", "", 3),
    ("estoi", "Extended STOI against the clean utterance", "", 3),
    ("pesq", "Wideband PESQ against the clean utterance", "MOS-LQO", 2),
    ("mel_l1", "Log-mel L1 to the clean log-mel", "ln-mel", 3),
    ("mcd", "Mel-cepstral distortion to the clean log-mel", "dB", 2),
    ("speaker_id_acc", "Linear speaker-ID probe accuracy on hidden states (held-out utterances "
                       "of training speakers)", "%", 1),
]


HUMAN_ERROR = "human_error"
HUMAN_CHANCE = 0.5  # a triplet asks which of two speakers: guessing is wrong half the time


def listening_score_files(listening_dir: Path) -> list[Path]:
    """The listening tests' ``<name>/scores.csv`` (metric human_error), none when not run."""
    return sorted(Path(listening_dir).glob("*/scores.csv"))


def condition_namer(sets: set[str]):
    tests = {split_condition(s)[0] for s in sets}

    def name(set_name: str) -> str:
        test, cond = split_condition(set_name)
        return cond if len(tests) <= 1 else f"{test}:{cond}"
    return name


def collect(score_files: list[Path], asr_results: Path | None = None,
            speaker_id: list[tuple[str, str, Path]] = ()) -> list[dict]:
    """All rows in report form. ``speaker_id``: (model, training, results.csv) triples."""
    rows = []
    raw = []
    source = {}  # a cell given twice would silently show only one of its values
    for path in score_files:
        if not Path(path).is_file():
            raise LayerScoringError(f"{path}: not found (run the scoring stage)")
        for r in read_scores(Path(path)):
            key = (r["model"], r["training"], r["set"], r["layer"], r["metric"])
            if key in source:
                raise LayerScoringError(f"{path}: {r['metric']} of {r['model']} "
                                        f"{r['training']} {r['set']} {r['layer']} is also in "
                                        f"{source[key]}; keep one of the two files")
            source[key] = path
            raw.append(r)
    asr = []
    if asr_results is not None:
        with open(asr_results, encoding="utf-8", newline="") as f:
            asr = list(csv.DictReader(f))
    name = condition_namer({r["set"] for r in raw} | {r["set"] for r in asr})
    for r in raw:
        rows.append({"model": r["model"], "training": r["training"],
                     "condition": name(r["set"]), "layer": r["layer"],
                     "layer_index": int(r["layer_index"]),
                     **{k: r[k] for k in ("metric", "value", "ci_low", "ci_high", "n")}})
    last = defaultdict(int)  # model -> index after its last probed layer
    for r in rows:
        last[r["model"]] = max(last[r["model"]], r["layer_index"] + 1)
    for r in asr:
        for metric in ("wer", "cer"):
            rows.append({"model": r["model"], "training": r["training"],
                         "condition": name(r["set"]), "layer": "output",
                         "layer_index": last[r["model"]], "metric": metric, "value": r[metric],
                         "ci_low": "", "ci_high": "", "n": r["utterances"]})
    for model, training, path in speaker_id:
        with open(path, encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                rows.append({"model": model, "training": training, "condition": "clean",
                             "layer": r["layer"], "layer_index": int(r["layer_index"]),
                             "metric": "speaker_id_acc", "value": 100 * float(r["accuracy"]),
                             "ci_low": 100 * float(r["ci_low"]),
                             "ci_high": 100 * float(r["ci_high"]), "n": r["n"]})
    return rows


def write_report_csv(path: Path, rows: list[dict]) -> None:
    with atomic_open(path) as f:
        w = csv.DictWriter(f, fieldnames=REPORT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def as_number(x) -> float | None:
    """A scores.csv cell as a number; None when it is empty or not finite."""
    if x in ("", None):
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _cell(r: dict | None, digits: int, ci: bool = True, show_n: bool = False) -> str:
    if r is None or as_number(r["value"]) is None:
        return "-"
    text = f"{as_number(r['value']):.{digits}f}"
    lo, hi = as_number(r["ci_low"]), as_number(r["ci_high"])
    if ci and lo is not None and hi is not None:
        text += f" ({lo:.{digits}f}-{hi:.{digits}f})"
    if show_n and r["n"] not in ("", None):
        text += f" n={r['n']}"
    return text


def condition_key(c: str):
    """Report order of conditions: per test set, clean first, then SNRs from high to low."""
    cond = c.split(":")[-1]
    return (c.split(":")[0] if ":" in c else "", cond != "clean",
            -int(cond[3:]) if cond.startswith("snr") else 0)


def conditions_in(rows: list[dict]) -> list[str]:
    return sorted({r["condition"] for r in rows}, key=condition_key)


def models_in(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows if r["model"] not in REFERENCE_MODELS))


def layers_of(rows: list[dict], model: str) -> list[str]:
    idx = {r["layer"]: r["layer_index"] for r in rows if r["model"] == model}
    return sorted(idx, key=idx.get)


def layer_tables(rows: list[dict], metric: str, digits: int, show_n: bool = False) -> str:
    """One table per model: rows training x condition, columns its layers (input first)."""
    sel = [r for r in rows if r["metric"] == metric]
    out = []
    for model in models_in(sel):
        mrows = [r for r in sel if r["model"] == model]
        layers = layers_of(mrows, model)
        by = {(r["training"], r["condition"], r["layer"]): r for r in mrows}
        keys = sorted({(r["training"], r["condition"]) for r in mrows},
                      key=lambda k: (TRAINING_ORDER.get(k[0], 9), conditions_in(sel).index(k[1])))
        out += [f"**{model}**", "", "| training | condition | " + " | ".join(layers) + " |",
                "|---|---|" + "---:|" * len(layers)]
        for training, cond in keys:
            cells = [_cell(by.get((training, cond, layer)), digits, show_n=show_n)
                     for layer in layers]
            out.append(f"| {training} | {cond} | " + " | ".join(cells) + " |")
        out.append("")
    refs = [r for r in sel if r["model"] in REFERENCE_MODELS]
    if refs:
        conds = conditions_in(refs)
        by = {(r["model"], r["condition"]): r for r in refs}
        out += ["| reference | " + " | ".join(conds) + " |", "|---|" + "---:|" * len(conds)]
        for model in REFERENCE_MODELS:
            if any(r["model"] == model for r in refs):
                out.append(f"| {model} | " + " | ".join(_cell(by.get((model, c)), digits,
                                                              show_n=show_n)
                                                        for c in conds) + " |")
        out.append("")
    return "\n".join(out)


def wer_table(rows: list[dict]) -> str:
    sel = [r for r in rows if r["metric"] in ("wer", "cer")]
    if not sel:
        return ""
    conds = conditions_in(sel)
    by = {(r["model"], r["training"], r["condition"], r["metric"]): r for r in sel}
    keys = list(dict.fromkeys((r["model"], r["training"]) for r in sel))
    out = ["| model | training | " + " | ".join(conds) + " |", "|---|---|" + "---:|" * len(conds)]
    for model, training in keys:
        cells = []
        for c in conds:
            w, ch = by.get((model, training, c, "wer")), by.get((model, training, c, "cer"))
            cells.append(f"{_cell(w, 1)} / {_cell(ch, 1)}" if w else "-")
        out.append(f"| {model} | {training} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def failures_table(rows: list[dict]) -> str:
    """Utterances where a quality metric could not be computed, per model/training/condition."""
    sel = [r for r in rows if r["metric"].endswith("_failed") and (as_number(r["value"]) or 0) > 0]
    if not sel:
        return "No utterance failed STOI, ESTOI or PESQ.\n"
    out = ["| model | training | condition | layer | metric | failed / utterances |",
           "|---|---|---|---|---|---:|"]
    for r in sel:
        out.append(f"| {r['model']} | {r['training']} | {r['condition']} | {r['layer']} | "
                   f"{r['metric'][:-len('_failed')]} | {int(as_number(r['value']))} / {r['n']} |")
    return "\n".join(out) + "\n"


def trials_summary(trials_dir: Path) -> str:
    """One line per test set: how many trials of each kind over how many utterances."""
    lines = []
    for path in sorted(Path(trials_dir).glob("*/trials")):
        t = read_trials(path)
        lines.append(f"- speaker trials `{path}`: {t.n_target} target + {t.n_nontarget} "
                     f"non-target pairs over {len(t.utterances())} utterances, the same for "
                     "every model, layer and condition")
    return "\n".join(lines)


def human_error_section(rows: list[dict], digits: int, listening_dir: str) -> str:
    """The listening test's table, or one sentence on how to get it."""
    if not any(r["metric"] == HUMAN_ERROR for r in rows):
        return (f"No listening-test results in `{listening_dir}/<name>/scores.csv`: run the "
                "listening test (`espnet_probe/listening`) with a few listeners, then re-run "
                "the report (`./run.sh --stage 12`).\n")
    return (f"Fraction of triplets a listener answered wrong (chance {HUMAN_CHANCE}); 95% CI in "
            "parentheses from a two-way bootstrap over raters and triplets (at least as wide as "
            "Wilson's), n = answers.\n\n"
            + layer_tables(rows, HUMAN_ERROR, digits, show_n=True))


def results_markdown(rows: list[dict], plots: dict[str, str], header: str = "",
                     listening_dir: str = "exp/listening", findings: str = "",
                     appendix: str = "") -> str:
    """RESULTS.md: ``findings`` (generated from the paired tests) after the header, then
    Table 1, the per-layer tables, plots and ``appendix`` (probe training, paired tests)."""
    present = {r["metric"] for r in rows}
    md = ["# Results: what each layer keeps", ""] + ([header, ""] if header else []) + [
          "All numbers come from `scores.csv` beside this file; 95% confidence intervals in "
          "parentheses (bootstrap over trials for EER/minDCF, t-interval over utterances for "
          "STOI/PESQ/mel, Wilson for speaker-ID accuracy, a rater x triplet bootstrap for the "
          "human error rate). Reference rows: `original` = the unprocessed audio of each "
          "condition, `oracle` = Griffin-Lim of the input log-mel itself (the vocoder's "
          "ceiling); `random` = probes on a randomly initialised encoder; `brought` = an "
          "ESPnet model trained outside this recipe.",
          ""]
    if findings:
        md += [findings, ""]
    if "wer" in present:
        md += ["## Table 1: ASR WER / CER % (no LM; greedy CTC for CTC-only models, ESPnet's "
               "joint CTC/attention beam search at the model's ctc_weight for hybrid ones, "
               "Whisper's own greedy decoding scored after its English normaliser for Whisper: "
               "exp/asr_results.md says which)", "", wer_table(rows)]
    for metric, title, unit, digits in METRICS:
        if metric == HUMAN_ERROR:  # present or not: say how to run the test
            md += [f"## {title}", "", human_error_section(rows, digits, listening_dir)]
            continue
        if metric not in present:
            continue
        label = "Table 2" if metric == "eer_ge2e" else ("Table 2b" if metric == "eer_resnet"
                                                         else "Table")
        md += [f"## {label}: {title}{f' ({unit})' if unit else ''}", "",
               layer_tables(rows, metric, digits)]
    if any(r["metric"].endswith("_failed") for r in rows):
        md += ["## Quality-metric failures", "", failures_table(rows)]
    if plots:
        md += ["## Plots", ""] + [f"![{title}]({name})" for name, title in plots.items()] + [""]
    if appendix.strip():
        md += [appendix]
    return "\n".join(md)
