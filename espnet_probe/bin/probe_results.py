"""Per-layer probe L1 tables from probe decoding summaries (the numbers behind stage 8).

  python -m espnet_probe.bin.probe_results --exps exp/probe_a exp/probe_b --out exp/probe_results

Reads <exp>/decode_<set>/summary.json, writes <exp>/RESULTS.md for each experiment and
OUT.csv (probe,condition,layer,layer_index,l1_heard,l1_clean) and OUT.md (one row per probe and
condition, one column per layer, L1 to the heard log-mel).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from espnet_probe.probe.summary import DecodeSummaryError, decode_summaries
from espnet_probe.utils.fileio import atomic_open


def markdown_table(rows: list[tuple[str, str, dict]]) -> str:
    """rows: (probe, condition, {layer: l1}); columns follow the first row's widest layer list."""
    layers: list[str] = []
    for _, _, values in rows:
        layers += [name for name in values if name not in layers]
    lines = ["| probe | condition | " + " | ".join(layers) + " |",
             "|---|---|" + "---:|" * len(layers)]
    for probe, condition, values in rows:
        cells = [f"{values[name]:.3f}" if name in values else "" for name in layers]
        lines.append(f"| {probe} | {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--exps", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="output prefix (.csv and .md)")
    args = p.parse_args(argv)
    rows, records = [], []
    try:
        for exp in args.exps:
            probe = exp.name[len("probe_"):] if exp.name.startswith("probe_") else exp.name
            exp_rows = []
            for summary in decode_summaries(exp):
                condition = summary.set_name
                exp_rows.append((probe, condition, {d.layer.name: d.l1_heard for d in summary.layers}))
                for d in summary.layers:
                    records.append([probe, condition, d.layer.name, d.layer.index, d.l1_heard,
                                    "" if d.l1_clean is None else d.l1_clean])
            rows += exp_rows
            with atomic_open(exp / "RESULTS.md") as f:
                f.write(f"# {exp.name}: probe L1 per layer (log-mel, per frame and bin; to the heard mel)\n\n")
                f.write(markdown_table(exp_rows))
    except DecodeSummaryError as e:
        print(f"probe_results: error: {e}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(args.out.with_suffix(".csv")) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["probe", "condition", "layer", "layer_index", "l1_heard", "l1_clean"])
        writer.writerows(records)
    with atomic_open(args.out.with_suffix(".md")) as f:
        f.write("# Probe L1 per layer and condition (to the log-mel the encoder heard)\n\n")
        f.write(markdown_table(rows))
    print(f"probe_results: {len(records)} rows -> {args.out}.csv, {args.out}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
