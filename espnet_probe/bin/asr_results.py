"""Collect decode results into exp/<asr>/RESULTS.md and the paper's Table 1 (model x training x set).

  python -m espnet_probe.bin.asr_results --exps exp/asr_* --out exp/asr_results
writes <out>.md and <out>.csv, and a RESULTS.md into every experiment.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from espnet_probe.experiments import TRAINED, read_experiment
from espnet_probe.utils.fileio import atomic_open


def load_results(exp: Path) -> list[dict]:
    rows = []
    for f in sorted(exp.glob("decode_*/result.json")):
        with open(f, encoding="utf-8") as fh:
            r = json.load(fh)
        rows.append(r)
    return rows


def describe_decoding(result: dict) -> str:
    d = result.get("decoding") or {"method": "ctc_greedy"}
    if d["method"] == "whisper_greedy":
        how = "Whisper's greedy decoding, no timestamps"
    elif d["method"] == "joint_ctc_attention" and d["ctc_weight"] == 0:
        how = f"attention beam {d['beam_size']} (ESPnet Speech2Text, ctc_weight 0), no LM"
    elif d["method"] == "joint_ctc_attention":
        how = f"joint CTC/attention beam {d['beam_size']}, ctc_weight {d['ctc_weight']:g} (ESPnet Speech2Text), no LM"
    else:
        how = "greedy CTC, no LM"
    if d.get("maxlenratio"):
        how += f", maxlenratio {d['maxlenratio']:g}"
    return how + (f"; WER after {result['normaliser']}" if result.get("normaliser") else "")


def experiment_info(exp: Path) -> dict:
    """What the experiment is, from its record: config, train_set, training, seconds, machine."""
    record = read_experiment(exp) or {}
    if record.get("training") == "brought":
        return {**record, "config": record.get("source"), "train_set": "its own"}
    return {**record, **record.get(TRAINED, {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--exps", nargs="+", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    table = []
    for exp in args.exps:
        info = experiment_info(exp)
        rows = load_results(exp)
        if not rows:
            print(f"asr_results: {exp} has no decode results yet, skipped", file=sys.stderr)
            continue
        lines = [f"# {exp.name}", "",
                 f"- model config: `{info.get('config', '?')}`; training data: "
                 f"`{info.get('train_set', '?')}` ({info.get('training', '?')})",
                 f"- checkpoint: `{rows[0]['checkpoint']}`; decoding: {describe_decoding(rows[0])}; "
                 f"input: {rows[0].get('input', 'feats')}",
                 f"- training time: {info.get('seconds', '?')} s on {info.get('machine', '?')}"
                 if info.get("training") != "brought" else "- brought: trained outside this recipe",
                 "", "| set | utts | WER % | (sub/del/ins) | CER % | (sub/del/ins) |",
                 "|---|---:|---:|---|---:|---|"]
        for r in rows:
            w, c = r["wer"], r["cer"]
            lines.append(f"| {r['set']} | {r['utterances']} | {w['rate']:.2f} | "
                         f"{w['sub']}/{w['del']}/{w['ins']} | {c['rate']:.2f} | "
                         f"{c['sub']}/{c['del']}/{c['ins']} |")
            table.append({"experiment": exp.name, "model": info.get("model", exp.name),
                          "training": info.get("training", ""), "set": r["set"],
                          "wer": w["rate"], "cer": c["rate"], "utterances": r["utterances"],
                          "decoding": describe_decoding(r)})
        with atomic_open(exp / "RESULTS.md") as f:
            f.write("\n".join(lines) + "\n")

    if not table:
        print("asr_results: nothing to report", file=sys.stderr)
        return 1
    sets = list(dict.fromkeys(r["set"] for r in table))
    keys = list(dict.fromkeys((r["model"], r["training"]) for r in table))
    by = {(r["model"], r["training"], r["set"]): r for r in table}
    md = ["# ASR results (Table 1): WER / CER % by test condition", "",
          "| model | training | " + " | ".join(sets) + " | decoding |",
          "|---|---|" + "---:|" * len(sets) + "---|"]
    for model, training in keys:
        cells = []
        for s in sets:
            r = by.get((model, training, s))
            cells.append(f"{r['wer']:.1f} / {r['cer']:.1f}" if r else "-")
        decoding = next(r["decoding"] for r in table if (r["model"], r["training"]) == (model, training))
        md.append(f"| {model} | {training} | " + " | ".join(cells) + f" | {decoding} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(args.out.with_suffix(".md")) as f:
        f.write("\n".join(md) + "\n")
    with atomic_open(args.out.with_suffix(".csv")) as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    print("\n".join(md), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
