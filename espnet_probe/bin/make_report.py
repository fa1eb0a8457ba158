"""The report of a whole experiment: scores.csv, RESULTS.md and the paper's figures.

  python -m espnet_probe.bin.make_report --out exp/report \\
      --scores exp/probe_*/scores.csv exp/probe_oracle/scores.csv exp/score_original/scores.csv \\
      [--asr_results exp/asr_results.csv] \\
      [--speaker_id vgg_blstm_small:baseline:exp/asr_vgg_blstm_small_baseline/speaker_id/results.csv] \\
      [--mel_figure vgg_blstm_small:baseline:clean:exp/probe_vgg_blstm_small_baseline/decode_test ...] \\
      [--oracle_root exp/probe_oracle] [--mel_utt UTT] [--header "one paragraph"] \\
      [--trials_dir exp/trials] [--listening_dir exp/listening]

Writes OUT/scores.csv (model,training,condition,layer,layer_index,metric,value,ci_low,ci_high,n),
OUT/comparisons.csv (paired tests: trained vs random, robust vs baseline, each layer vs the one
before, the probe-strength check; columns in espnet_probe/report/comparisons.py), OUT/RESULTS.md (Table 1 WER, Table 2 EER per layer for each speaker encoder, STOI/ESTOI/PESQ,
mel L1/MCD, speaker-ID accuracy, PESQ failures) and PNG plots: eer_ge2e.png, eer_resnet.png
(Fig. 2a), stoi.png (Fig. 4), pesq.png, speaker_id.png, mel_<model>.png (Fig. 3),
probe_curves.png (each probe's validation L1 per epoch). RESULTS.md's "What it shows" is
generated from comparisons.csv.
Listening tests' LISTENING_DIR/<name>/scores.csv (default: OUT/../listening, i.e.
exp/listening) join the scores when present: the human error table and human_error.png (Fig. 2b).
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import argparse
import json
import sys
from pathlib import Path

from espnet_probe.data.augment import describe_noise
from espnet_probe.metrics.paired import PairedTestError
from espnet_probe.probe.files import TRAINING_RECORD
from espnet_probe.report.comparisons import compare_all, scored_experiment, write_comparisons
from espnet_probe.report.findings import (depth_trend_lines, findings_markdown,
                                           paired_tests_markdown, probe_training_markdown,
                                           strength_lines)
from espnet_probe.report.plots import plot_mel_layers, plot_metric_per_layer, plot_probe_curves
from espnet_probe.report.results import (HUMAN_CHANCE, HUMAN_ERROR, collect,
                                         listening_score_files, results_markdown, trials_summary,
                                         write_report_csv)
from espnet_probe.scoring.layer_scores import LayerScoringError
from espnet_probe.utils.fileio import atomic_open

FIGURES = [("eer_ge2e", "EER % (GE2E)", "Fig. 2a: speaker-verification EER per layer, GE2E"),
           ("eer_resnet", "EER % (ThinResNet)",
            "Fig. 2a: speaker-verification EER per layer, ThinResNet-34 + GhostVLAD"),
           (HUMAN_ERROR, "human error rate", "Fig. 2b: human error rate per layer (listening "
            "test, Wilson 95% CI)"),
           ("stoi", "STOI", "Fig. 4: STOI per layer, baseline vs robust"),
           ("pesq", "PESQ (wb)", "Wideband PESQ per layer"),
           ("speaker_id_acc", "accuracy %", "Linear speaker-ID probe accuracy per layer")]


def _triple(text: str, n: int, what: str) -> list[str]:
    parts = text.split(":", n - 1)
    if len(parts) != n:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scores", type=Path, nargs="+", required=True,
                   help="scores.csv files written by score_layers")
    p.add_argument("--asr_results", type=Path, help="exp/asr_results.csv (Table 1)")
    p.add_argument("--speaker_id", nargs="*", default=[],
                   type=lambda t: _triple(t, 3, "MODEL:TRAINING:results.csv"))
    p.add_argument("--mel_figure", nargs="*", default=[],
                   type=lambda t: _triple(t, 4, "MODEL:TRAINING:CONDITION:decode_dir"),
                   help="columns of the mel figure, one PNG per model")
    p.add_argument("--oracle_root", type=Path, help="probe_oracle exp (the heard input mel)")
    p.add_argument("--mel_utt", help="utterance of the mel figure (default: the first vocoded)")
    p.add_argument("--header", default="", help="a paragraph on top of RESULTS.md")
    p.add_argument("--trials_dir", type=Path, help="exp/trials: describe the trial lists")
    p.add_argument("--noise_dir", type=Path, help="the MUSAN-layout dir the noisy sets were mixed "
                                                  "from: say which noise it holds")
    p.add_argument("--listening_dir", type=Path,
                   help="listening tests' <name>/scores.csv (default: OUT/../listening)")
    p.add_argument("--n_boot", type=int, default=1000, help="paired bootstrap replicates")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    listening_dir = args.listening_dir or args.out.parent / "listening"
    try:
        speaker_id = [(m, t, Path(f)) for m, t, f in args.speaker_id]
        for _, _, f in speaker_id:
            if not f.is_file():
                raise LayerScoringError(f"{f}: not found (run the speaker-ID probe)")
        rows = collect(args.scores + listening_score_files(listening_dir), args.asr_results,
                       speaker_id)
        write_report_csv(args.out / "scores.csv", rows)
        plots = {}
        for metric, ylabel, title in FIGURES:
            chance = HUMAN_CHANCE if metric == HUMAN_ERROR else None
            if plot_metric_per_layer(rows, metric, ylabel, args.out / f"{metric}.png",
                                     chance=chance):
                plots[f"{metric}.png"] = title
        by_model: dict[str, list] = {}
        for model, training, cond, decode_dir in args.mel_figure:
            by_model.setdefault(model, []).append((training, cond, Path(decode_dir)))
        for model, cols in by_model.items():
            if args.oracle_root is None:
                p.error("--mel_figure needs --oracle_root")
            utt = args.mel_utt
            if utt is None:
                utt = (cols[0][2] / "vocoded_utts").read_text().split()[0]
            columns = [(f"{training}, {cond}", d, args.oracle_root / d.name)
                       for training, cond, d in cols]
            if plot_mel_layers(columns, utt, args.out / f"mel_{model}.png"):
                plots[f"mel_{model}.png"] = f"Fig. 3: log-mel per layer, {model}"
        experiments = [e for e in map(scored_experiment, args.scores) if e is not None]
        comparisons = compare_all(experiments, speaker_id, args.n_boot, args.seed)
        write_comparisons(args.out / "comparisons.csv", comparisons)
        training = {Path(e.dir).name: json.loads((Path(e.dir) / TRAINING_RECORD).read_text())
                    for e in experiments if (Path(e.dir) / TRAINING_RECORD).is_file()}
        if plot_probe_curves(training, args.out / "probe_curves.png"):
            plots["probe_curves.png"] = "Validation L1 of each layer's probe per epoch (dot: kept epoch)"
        header = args.header
        if args.noise_dir is not None:
            header = "\n\n".join(x for x in (header, describe_noise(args.noise_dir)) if x)
        if args.trials_dir is not None:
            header = "\n\n".join(x for x in (header, trials_summary(args.trials_dir)) if x)
        with atomic_open(args.out / "RESULTS.md") as f:
            f.write(results_markdown(rows, plots, header, str(listening_dir),
                                     findings=findings_markdown(comparisons, rows),
                                     appendix="\n".join([probe_training_markdown(training),
                                                          paired_tests_markdown(comparisons)])))
    except (LayerScoringError, PairedTestError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"make_report: error: {e}", file=sys.stderr)
        return 1
    for line in strength_lines(comparisons):
        print(f"make_report: probe strength {line[2:]}", file=sys.stderr)
    for line in depth_trend_lines(rows):
        print(f"make_report: GE2E EER depth trend {line[2:]}", file=sys.stderr)
    print(f"make_report {args.out}: {len(rows)} scores, {len(comparisons)} paired tests "
          f"({sum(int(r['significant']) for r in comparisons)} significant), {len(plots)} plots, "
          f"{args.out / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
