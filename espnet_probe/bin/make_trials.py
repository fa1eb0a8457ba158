"""Speaker-verification trials from a data dir's utt2spk: equal target / non-target counts.

  python -m espnet_probe.bin.make_trials --data_dir data/test --out data/test/trials \\
      [--n_per_class 2000] [--seed 0] [--nontarget_gender any|same] [--allow_fewer]

Lines are 'utt1 utt2 target|nontarget'. Pairs are spread evenly over speakers (targets) and
speaker pairs (non-targets); see espnet_probe/metrics/trials.py for the exact rules.
--nontarget_gender same keeps only same-gender non-targets (harder; needs utt2gender or
spk2gender). Asking for more pairs than the data allows is an error unless --allow_fewer, which
caps both classes at the largest possible equal count and warns.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from espnet_probe.data.kaldi_dir import DataDirError, read_table
from espnet_probe.metrics.trials import TrialsError, make_trials, read_genders, write_trials


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data_dir", required=True, help="Kaldi data dir with utt2spk")
    p.add_argument("--out", required=True, help="trials file to write")
    p.add_argument("--n_per_class", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nontarget_gender", choices=("any", "same"), default="any")
    p.add_argument("--allow_fewer", action="store_true",
                   help="cap at what the data allows (with a warning) instead of failing")
    args = p.parse_args(argv)
    try:
        data_dir = Path(args.data_dir)
        utt2spk = read_table(data_dir / "utt2spk")
        genders = read_genders(data_dir, utt2spk)
        trials = make_trials(utt2spk, args.n_per_class, args.seed, genders,
                             args.nontarget_gender, args.allow_fewer)
        write_trials(args.out, trials)
    except (DataDirError, TrialsError) as e:
        print(f"make_trials: error: {e}", file=sys.stderr)
        return 1
    print(f"make_trials {args.out}: {trials.n_target} target + {trials.n_nontarget} nontarget "
          f"{json.dumps(trials.info)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
