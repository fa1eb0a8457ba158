"""Speaker-verification trials from a data dir's utt2spk: equal target / non-target counts.

  python -m espnet_probe.bin.make_trials --data_dir data/test --out data/test/trials \\
      [--n_per_class 2000] [--seed 0] [--nontarget_gender any|same] [--allow_fewer] \\
      [--utt_list exp/probe_oracle/decode_test/vocoded_utts]

Lines are 'utt1 utt2 target|nontarget'. Pairs are spread evenly over speakers (targets) and
speaker pairs (non-targets); see espnet_probe/metrics/trials.py for the exact rules.
--nontarget_gender same keeps only same-gender non-targets (harder; needs utt2gender or
spk2gender). Asking for more pairs than the data allows is an error unless --allow_fewer, which
caps both classes at the largest possible equal count and warns. --utt_list restricts the trials
to the listed utterances (e.g. the ones that were vocoded); an id not in utt2spk is an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from espnet_probe.metrics.trials import TrialsError, make_trials, read_genders, write_trials
from espnet_probe.utils.kaldi_dir import DataDirError, read_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data_dir", required=True, help="Kaldi data dir with utt2spk")
    p.add_argument("--out", required=True, help="trials file to write")
    p.add_argument("--n_per_class", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nontarget_gender", choices=("any", "same"), default="any")
    p.add_argument("--allow_fewer", action="store_true",
                   help="cap at what the data allows (with a warning) instead of failing")
    p.add_argument("--utt_list", help="file with one utterance id per line: draw only from these")
    args = p.parse_args(argv)
    try:
        data_dir = Path(args.data_dir)
        utt2spk = read_table(data_dir / "utt2spk")
        if args.utt_list:
            if not Path(args.utt_list).is_file():
                raise DataDirError(f"{args.utt_list}: utterance list not found")
            utts = Path(args.utt_list).read_text(encoding="utf-8").split()
            unknown = [u for u in utts if u not in utt2spk]
            if unknown:
                raise DataDirError(f"{args.utt_list}: {len(unknown)} ids are not in "
                                   f"{data_dir / 'utt2spk'}, e.g. {unknown[:3]}")
            if not utts:
                raise DataDirError(f"{args.utt_list}: no utterance ids")
            utt2spk = {u: utt2spk[u] for u in utts}
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
