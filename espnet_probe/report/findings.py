"""The report's paired-test tables and its "What it shows" text, generated from comparisons.csv.

Nothing here is written by hand about a particular run: every sentence is a count or a list
of the comparisons whose 95 % paired-bootstrap interval excludes 0, so the text changes when
the numbers do.  A difference marked ``*`` is one whose interval excludes 0.
"""

from __future__ import annotations

import math
from collections import defaultdict

from espnet_probe.report.comparisons import (INPUT_VS_ORACLE_STOI, RANDOM_FIRST_VS_INPUT_STOI,
                                              SPEAKER_ID)
from espnet_probe.report.results import condition_key

# metric -> (label, digits, what a higher value means)
METRIC_TEXT = {
    "eer_ge2e": ("EER (GE2E)", 1, "less speaker information"),
    "eer_resnet": ("EER (ThinResNet)", 1, "less speaker information"),
    "stoi": ("STOI", 3, "more intelligible"),
    "estoi": ("ESTOI", 3, "more intelligible"),
    "pesq": ("PESQ", 2, "better quality"),
    "mel_l1": ("log-mel L1", 3, "further from the clean log-mel"),
    "mcd": ("MCD", 2, "further from the clean log-mel"),
    SPEAKER_ID: ("speaker-ID accuracy", 1, "more speaker information"),
}
# the metrics the text talks about (the tables show every one)
HEADLINE = ("eer_ge2e", "stoi", SPEAKER_ID)
KIND_TITLES = {
    "control": "trained encoder - random encoder (same architecture, same layer)",
    "robust_vs_baseline": "robust - baseline (same layer)",
    "depth": "each layer - the layer before it",
}


def _num(x) -> float:
    return float(x)


def _sig(r: dict) -> bool:
    return str(r["significant"]) in ("1", "True", "true")


def _diff_cell(r: dict, digits: int) -> str:
    text = (f"{_num(r['diff']):+.{digits}f} ({_num(r['ci_low']):+.{digits}f}, "
            f"{_num(r['ci_high']):+.{digits}f})")
    return text + ("*" if _sig(r) else "")


def comparison_tables(rows: list[dict], metric: str) -> str:
    """Per comparison kind, one table: rows (model, sides, condition), columns layers."""
    label, digits, _ = METRIC_TEXT.get(metric, (metric, 3, ""))
    sel = [r for r in rows if r["metric"] == metric and r["comparison"] in KIND_TITLES]
    out = []
    for kind, title in KIND_TITLES.items():
        krows = [r for r in sel if r["comparison"] == kind]
        if not krows:
            continue
        layers = list(dict.fromkeys(r["a_layer"] for r in krows))
        groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
        for r in krows:
            sides = (f"{r['a_training']} - {r['b_training']}" if kind != "depth"
                     else r["a_training"])
            groups[(r["model"], sides, r["condition"])][r["a_layer"]] = r
        head = "layer (vs the one before)" if kind == "depth" else "layer"
        out += [f"**{label}: {title}** ({head}; * = 95 % CI excludes 0)", "",
                "| model | sides | condition | " + " | ".join(layers) + " |",
                "|---|---|---|" + "---:|" * len(layers)]
        for (model, sides, cond) in sorted(groups, key=lambda k: (k[0], k[1], condition_key(k[2]))):
            cells = [_diff_cell(groups[(model, sides, cond)][layer], digits)
                     if layer in groups[(model, sides, cond)] else "-" for layer in layers]
            out.append(f"| {model} | {sides} | {cond} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _listing(items: list[str]) -> str:
    return ", ".join(items) if items else "none"


def _split(rs: list[dict], digits: int, name) -> tuple[list[str], list[str], int]:
    up = [f"{name(r)} ({_num(r['diff']):+.{digits}f})" for r in rs if _sig(r) and _num(r["diff"]) > 0]
    down = [f"{name(r)} ({_num(r['diff']):+.{digits}f})" for r in rs if _sig(r) and _num(r["diff"]) < 0]
    return up, down, sum(not _sig(r) for r in rs)


def strength_lines(rows: list[dict]) -> list[str]:
    """The probe-strength check, with a verdict on each of its two parts."""
    lines = []
    for r in rows:
        if r["comparison"] != "strength" or r["metric"] != "stoi":
            continue
        diff = _num(r["diff"])
        ci = f"{_num(r['ci_low']):+.3f} to {_num(r['ci_high']):+.3f}"
        if r["b_layer"] == "input":  # a random encoder's first layer vs its input
            ok = diff >= -RANDOM_FIRST_VS_INPUT_STOI
            lines.append(
                f"- {r['model']} random encoder, {r['condition']}: its first layer `{r['a_layer']}` "
                f"gets STOI {_num(r['value_a']):.3f} vs `input` {_num(r['value_b']):.3f}, "
                f"{diff:+.3f} ({ci}): **{'passes' if ok else 'fails'}** (within "
                f"{RANDOM_FIRST_VS_INPUT_STOI} asked)")
        else:
            ok = abs(diff) <= INPUT_VS_ORACLE_STOI
            lines.append(
                f"- {r['model']} {r['a_training']}, {r['condition']}: the `input` probe gets STOI "
                f"{_num(r['value_a']):.3f} vs the oracle's {_num(r['value_b']):.3f}, {diff:+.3f} "
                f"({ci}): **{'passes' if ok else 'fails'}** (within {INPUT_VS_ORACLE_STOI} asked)")
    return lines


DEPTH_TREND_RHO = 0.8  # "rises with depth": Spearman's rho of the metric against layer order


def spearman_rho(values: list[float]) -> float:
    """Spearman's rank correlation of ``values`` with their order (ties get mean ranks)."""
    n = len(values)
    order = sorted(range(n), key=values.__getitem__)
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    mean = (n - 1) / 2
    cov = sum((r - mean) * (k - mean) for k, r in enumerate(ranks))
    var_r = sum((r - mean) ** 2 for r in ranks)
    var_k = sum((k - mean) ** 2 for k in range(n))
    return cov / (var_r * var_k) ** 0.5 if var_r > 0 else 0.0


def depth_trend_lines(score_rows: list[dict], metric: str = "eer_ge2e") -> list[str]:
    """Per model, training and condition: Spearman's rho of ``metric`` against layer depth over
    the reconstructed layers (input included), and whether it reaches DEPTH_TREND_RHO."""
    series: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for r in score_rows:
        value = _num(r.get("value"))
        if r["metric"] == metric and r["model"] not in ("original", "oracle") and not math.isnan(value):
            series[(r["model"], r["training"], r["condition"])].append((int(r["layer_index"]), value))
    lines = []
    for (model, training, cond) in sorted(series, key=lambda k: (k[0], k[1], condition_key(k[2]))):
        points = sorted(series[(model, training, cond)])
        if len(points) < 3:
            continue
        rho = spearman_rho([v for _, v in points])
        verdict = "rises with depth" if rho >= DEPTH_TREND_RHO else "no monotone rise"
        lines.append(f"- {model} {training}, {cond}: rho = {rho:+.2f} over {len(points)} layers "
                     f"({points[0][1]:.1f} at the input, {points[-1][1]:.1f} at the last layer): "
                     f"**{verdict}** (rho >= {DEPTH_TREND_RHO} asked)")
    return lines


def findings_markdown(rows: list[dict], score_rows: list[dict] | None = None) -> str:
    """The "What it shows" section: each statement is a list of significant paired tests;
    with ``score_rows``, first the depth trend of the speaker EER (Spearman's rho)."""
    if not rows:
        return ""
    out = ["## What it shows (generated from the paired tests)", "",
           "Each statement lists the comparisons whose 95 % paired-bootstrap interval excludes 0 "
           "(difference in parentheses); the tables under *Paired tests* give every difference "
           "with its interval, and `comparisons.csv` every metric.", ""]
    strength = strength_lines(rows)
    if strength:
        fails = sum("**fails**" in line for line in strength)
        out += ["**Probe strength** (a probe too weak to recover the input, or a random "
                "convolution of it, would make early layers look lossy for its own sake):", ""]
        out += strength + [""]
        out.append(f"{len(strength) - fails} of {len(strength)} checks pass" + (
            "; where one fails, read the early layers' losses as bounds on what the probe "
            "recovers, not as what the layer lost." if fails else "."))
        out.append("")
    trend = depth_trend_lines(score_rows or [])
    if trend:
        out += [f"**Speaker information against depth** (Spearman's rho of the GE2E EER of each "
                f"layer's reconstruction against the layer's depth):", ""] + trend + [""]
    for metric in HEADLINE:
        label, digits, meaning = METRIC_TEXT[metric]
        mrows = [r for r in rows if r["metric"] == metric]
        if not mrows:
            continue
        out += [f"**{label}** (higher = {meaning}):", ""]
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in mrows:
            if r["comparison"] in KIND_TITLES:
                groups[(r["comparison"], r["model"], r["a_training"], r["b_training"],
                        r["condition"])].append(r)
        for (kind, model, ta, tb, cond) in sorted(
                groups, key=lambda k: (list(KIND_TITLES).index(k[0]), k[1], k[2], condition_key(k[4]))):
            rs = groups[(kind, model, ta, tb, cond)]
            if kind == "depth":
                up, down, same = _split(rs, digits, lambda r: f"{r['b_layer']}->{r['a_layer']}")
                out.append(f"- {model} {ta}, {cond}: rises at {_listing(up)}; falls at "
                           f"{_listing(down)}; {same} of {len(rs)} steps show no significant change.")
            else:
                up, down, same = _split(rs, digits, lambda r: r["a_layer"])
                out.append(f"- {model}, {cond}: {ta} is higher than {tb} at {_listing(up)}; lower "
                           f"at {_listing(down)}; indistinguishable at {same} of {len(rs)} layers.")
        out.append("")
    return "\n".join(out)


def paired_tests_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    out = ["## Paired tests", "",
           "Differences A - B with 95 % paired-bootstrap intervals (utterances resampled for "
           "STOI/PESQ/mel and speaker-ID, trials for EER); * marks an interval that excludes 0. "
           "Every metric is in `comparisons.csv`.", ""]
    for metric in METRIC_TEXT:
        if any(r["metric"] == metric for r in rows):
            out.append(comparison_tables(rows, metric))
    return "\n".join(out)


def probe_training_markdown(records: dict[str, dict]) -> str:
    """Per experiment and layer: the kept epoch, its validation L1 and whether the curve had
    flattened (probe_training.json, written by the probe trainer)."""
    records = {name: r for name, r in records.items() if r.get("layers")}
    if not records:
        return ""
    out = ["## Probe training", "",
           "Each layer's probe is kept from the epoch of its lowest validation L1 (ESPnet's "
           "trainer with one best-model criterion per layer). *converged*: its last 3 epochs "
           "improved the best validation L1 by less than 1 %. Curves: `probe_curves.png`.", "",
           "| experiment | epochs | " + " | ".join(["layer: best epoch, valid L1"]) + " |",
           "|---|---:|---|"]
    for name, record in records.items():
        cells = [f"{layer} {r['best_epoch']}, {r['valid_l1']:.3f}{'' if r['converged'] else ' (not converged)'}"
                 for layer, r in record["layers"].items()]
        out.append(f"| {name} | {record['epochs']} | " + "; ".join(cells) + " |")
    unconverged = [f"{name}:{layer}" for name, record in records.items()
                   for layer, r in record["layers"].items() if not r["converged"]]
    out += ["", f"Probes still improving when training stopped: {_listing(unconverged)}.", ""]
    return "\n".join(out)
