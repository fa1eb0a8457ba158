"""Plan the outputs of a run, and tell a stage which to make and what each is
(see espnet_probe/experiments.py).

  python -m espnet_probe.bin.experiments plan --expdir exp --asr_configs conf/asr/x.yaml \\
      --asr_trainings baseline robust [--brought exp/asr_y_brought] [--controls true] \\
      --test_sets test --noisy_test_sets test_snr0 [--control_conditions clean] \\
      [--robust_init scratch] [--speaker_config conf/speaker/x.yaml] [--listening_name default]
  python -m espnet_probe.bin.experiments list --expdir exp [--kind probe] [--init trained] \\
      [--training robust]
  python -m espnet_probe.bin.experiments get exp/probe_x_robust sets
  python -m espnet_probe.bin.experiments trainings --expdir exp
  python -m espnet_probe.bin.experiments listening_default --expdir exp
  python -m espnet_probe.bin.experiments trained --exp exp/asr_x --train_set train --seconds 812 \\
      --machine "2 CPU cores, 0 GPU, 1 thread(s)"

``list`` prints the planned dirs, one per line, in plan order; ``get`` one field of a dir's
record (sets space-separated, an empty field as an empty line). ``trainings`` prints stage 5's
rounds, one line each (its ASR dirs space-separated; a round waits for the one before; no
line for an empty round).
``listening_default`` prints the probe experiment the listening test takes by default.
``trained`` adds what an ASR experiment's training was to its record (local/train.sh).
"""

from __future__ import annotations

import argparse
import sys

from espnet_probe.experiments import (KINDS, ExperimentError, listening_default, load, note_trained,
                                      plan, select, training_rounds, write_plan)


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
    mk.add_argument("--speaker_config", default="", help="the speaker encoder's training config")
    mk.add_argument("--listening_name", default="default", help="the listening test's name")
    ls = sub.add_parser("list", help="the planned dirs, one per line")
    ls.add_argument("--expdir", required=True)
    ls.add_argument("--kind", choices=KINDS)
    ls.add_argument("--init", choices=("trained", "random"))
    ls.add_argument("--training")
    get = sub.add_parser("get", help="one field of an experiment's record")
    get.add_argument("dir")
    get.add_argument("field")
    rounds = sub.add_parser("trainings", help="stage 5's ASR trainings, a line per round")
    rounds.add_argument("--expdir", required=True)
    default = sub.add_parser("listening_default", help="the listening test's default experiment")
    default.add_argument("--expdir", required=True)
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
                        args.control_conditions, args.robust_init, args.speaker_config,
                        args.listening_name)
            write_plan(args.expdir, exps)
        elif args.command == "trained":
            note_trained(args.exp, args.train_set, args.seconds, args.machine)
        elif args.command == "get":
            print(load(args.dir).field(args.field))
        elif args.command == "trainings":
            for round_ in training_rounds(select(args.expdir, kind="asr")):
                if round_:
                    print(" ".join(e.dir for e in round_))
        elif args.command == "listening_default":
            exp = listening_default(select(args.expdir, kind="probe"))
            if exp is None:
                raise ExperimentError(f"{args.expdir}: no trained probe experiment in the plan")
            print(exp.dir)
        else:
            for exp in select(args.expdir, args.kind, args.init, args.training):
                print(exp.dir)
    except ExperimentError as e:
        print(f"experiments: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
