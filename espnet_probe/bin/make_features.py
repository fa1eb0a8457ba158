"""Log-mel + delta features of a data dir as ark/scp (one job of N, or the merge step).

  python -m espnet_probe.bin.make_features --data_dir data/test_snr10 --out_dir dump/fbank/test_snr10 \
      --clean_dir data/test --nj 4 --job 2          # one job (run under ${cmd} JOB=1:4)
  python -m espnet_probe.bin.make_features ... --nj 4 --begin   # done | resume | changed | new
  python -m espnet_probe.bin.make_features ... --nj 4 --merge   # join jobs, stamp the set done
  python -m espnet_probe.bin.make_features --combine dump/fbank/train dump/fbank/train_aug \
      --out_dir dump/fbank/train_robust             # union of finished sets
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from espnet_probe.audio.fbank import FbankConfig
from espnet_probe.audio.feature_dump import (combine_feature_dirs, extract_job, feature_settings,
                                             merge_jobs)
from espnet_probe.audio.io import AudioError
from espnet_probe.utils.freshness import Stamp
from espnet_probe.utils.kaldi_dir import DataDirError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data_dir", help="Kaldi data dir to featurise")
    p.add_argument("--out_dir")
    p.add_argument("--config", default="conf/fbank.yaml")
    p.add_argument("--clean_dir", help="clean data dir whose audio gives the targets (noisy sets)")
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--job", type=int, help="which job to run (1-based)")
    p.add_argument("--merge", action="store_true", help="merge finished jobs")
    p.add_argument("--stats", action="store_true", help="accumulate global CMVN statistics")
    p.add_argument("--begin", action="store_true",
                   help="decide from the set's stamp (espnet_probe.utils.freshness) and print "
                        "done | resume (finished jobs kept) | changed | new (made afresh)")
    p.add_argument("--combine", nargs="+", metavar="FEATS_DIR", help="union of finished sets")
    args = p.parse_args(argv)

    if not args.out_dir:
        p.error("--out_dir is required")
    if args.begin:
        if not args.data_dir:
            p.error("--begin needs --data_dir")
        settings = feature_settings(FbankConfig.from_yaml(args.config), args.nj, args.data_dir,
                                    args.clean_dir)
        print(Stamp(args.out_dir).begin(settings))
        return 0
    if not args.combine and (not args.data_dir or (args.job is None) == (not args.merge)):
        p.error("give --data_dir and exactly one of --job N or --merge (or use --combine)")
    try:
        if args.combine:
            summary = combine_feature_dirs(args.out_dir, args.combine)
        else:
            cfg = FbankConfig.from_yaml(args.config)
            if args.merge:
                summary = merge_jobs(args.data_dir, args.out_dir, cfg, args.nj, args.stats,
                                     args.clean_dir)
            else:
                n = extract_job(args.data_dir, args.out_dir, cfg, args.nj, args.job,
                                args.clean_dir, args.stats)
                summary = {"job": args.job, "utterances": n}
    except (AudioError, DataDirError) as e:  # the user's data: one line naming the utterance
        print(f"make_features: error: {e}", file=sys.stderr)
        return 1
    print(f"make_features {args.out_dir}: {json.dumps(summary)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
