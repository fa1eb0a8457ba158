"""STOI, extended STOI and wideband PESQ of estimated speech against the clean reference.

  python -m espnet_probe.bin.score_quality --ref_scp data/test/wav.scp \\
      --est_scp exp/probe/blstm3/test_snr10/wav/wav.scp --out exp/.../scores/quality \\
      --nj 4 --job 2                # one job (run as ${cmd} JOB=1:4 ... --job JOB)
  python -m espnet_probe.bin.score_quality ... --nj 4 --merge       # join the jobs
  python -m espnet_probe.bin.score_quality ... --nj 2               # both steps, locally

Writes OUT/stoi, OUT/estoi, OUT/pesq ('utt value', nan where the metric failed) and
OUT/summary.json (mean, std, 95% t-interval, n, and the failed ids with reasons per metric;
pesq_failed at the top level). Finished jobs are skipped on a re-run.
"""

from __future__ import annotations

import argparse
import json
import sys

from espnet_probe.audio.io import AudioError
from espnet_probe.metrics.quality import (HOP, METRICS, QualityError, merge, run_job, score_all,
                                          summary_line)
from espnet_probe.utils.kaldi_dir import DataDirError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ref_scp", required=True, help="wav.scp of the clean references")
    p.add_argument("--est_scp", required=True, help="wav.scp of the estimates (same utt ids)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--job", type=int, help="run only this job (1-based)")
    p.add_argument("--merge", action="store_true", help="merge finished jobs")
    p.add_argument("--metrics", default=",".join(METRICS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--max_len_diff", type=int, default=HOP,
                   help="largest allowed length mismatch in samples (default %(default)s)")
    p.add_argument("--allow_subset", action="store_true",
                   help="score only the references that have an estimate")
    args = p.parse_args(argv)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if not metrics or any(m not in METRICS for m in metrics) or len(set(metrics)) != len(metrics):
        p.error(f"--metrics must be distinct names from {','.join(METRICS)}, got {args.metrics!r}")
    if args.nj < 1:
        p.error(f"--nj must be >= 1, got {args.nj}")
    if args.job is not None and args.merge:
        p.error("give --job or --merge, not both")
    common = dict(ref_scp=args.ref_scp, est_scp=args.est_scp, out_dir=args.out, nj=args.nj,
                  metrics=metrics, max_len_diff=args.max_len_diff, allow_subset=args.allow_subset)
    try:
        if args.job is not None:
            if not 1 <= args.job <= args.nj:
                p.error(f"--job must be in 1..{args.nj}, got {args.job}")
            info = run_job(job=args.job, **common)
            print(f"score_quality {args.out} job {args.job}/{args.nj}: {json.dumps(info)}",
                  file=sys.stderr)
            return 0
        summary = merge(**common) if args.merge else score_all(**common)
    except (AudioError, DataDirError, QualityError) as e:
        print(f"score_quality: error: {e}", file=sys.stderr)
        return 1
    print(f"score_quality {args.out}: {summary_line(summary)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
