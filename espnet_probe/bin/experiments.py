"""Plan the experiments of a run, and list them for a stage (see espnet_probe/experiments.py).

  python -m espnet_probe.bin.experiments plan --expdir exp --asr_configs conf/asr/x.yaml \\
      --asr_trainings baseline robust [--brought exp/asr_y_brought] [--controls true] \\
      --test_sets test --noisy_test_sets test_snr0 [--control_conditions clean]
  python -m espnet_probe.bin.experiments list --expdir exp --kind probe [--init trained] \\
      [--training robust] [--fields dir,asr_exp,init]
  python -m espnet_probe.bin.experiments trained --exp exp/asr_x --train_set train --seconds 812 \
      --machine "2 CPU cores, 0 GPU, 1 thread(s)"

``list`` prints one line per experiment, its fields space-separated (sets comma-joined, '-' for
an empty field), in plan order, for a shell loop: ``while read -r dir asr init; do ...``.
``trained`` adds what an ASR experiment's training was to its record (local/asr_train.sh).
"""

from __future__ import annotations

import argparse
import sys

from espnet_probe.experiments import KINDS, ExperimentError, note_trained, plan, select, write_plan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("plan", help="write the records and <expdir>/experiments.yaml")
    mk.add_argument("--expdir", required=True)
    mk.add_argument("--asr_configs", nargs="*", default=[])
    mk.add_argument("--asr_trainings", nargs="*", default=[])
    mk.add_argument("--brought", nargs="*", default=[], help="brought ASR exp dirs (bring_asr)")
    mk.add_argument("--controls", choices=("true", "false"), default="true")
    mk.add_argument("--test_sets", nargs="*", default=[])
    mk.add_argument("--noisy_test_sets", nargs="*", default=[])
    mk.add_argument("--control_conditions", choices=("clean", "all"), default="clean")
    mk.add_argument("--robust_init", choices=("scratch", "baseline"), default="scratch",
                    help="baseline: each robust model starts from its config's baseline model")
    ls = sub.add_parser("list", help="the planned experiments, one per line")
    ls.add_argument("--expdir", required=True)
    ls.add_argument("--kind", choices=KINDS)
    ls.add_argument("--init", choices=("trained", "random"))
    ls.add_argument("--training")
    ls.add_argument("--fields", default="dir")
    tr = sub.add_parser("trained", help="note an ASR experiment's training in its record")
    tr.add_argument("--exp", required=True)
    tr.add_argument("--train_set", required=True)
    tr.add_argument("--seconds", type=int, required=True)
    tr.add_argument("--machine", required=True)
    args = p.parse_args(argv)
    try:
        if args.command == "plan":
            exps = plan(args.expdir, args.asr_configs, args.asr_trainings, args.brought,
                        args.controls == "true", args.test_sets, args.noisy_test_sets,
                        args.control_conditions, args.robust_init)
            write_plan(args.expdir, exps)
            return 0
        if args.command == "trained":
            note_trained(args.exp, args.train_set, args.seconds, args.machine)
            return 0
        fields = args.fields.split(",")
        for exp in select(args.expdir, args.kind, args.init, args.training):
            print(" ".join(exp.field(f) for f in fields))
    except ExperimentError as e:
        print(f"experiments: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
