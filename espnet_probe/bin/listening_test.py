"""Human speaker triplet (ABX) listening test on the per-layer reconstructions.

  python -m espnet_probe.bin.listening_test make --exp_root exp --data data \\
      --out exp/listening/NAME [--exps probe_a probe_b] [--sets test] [--layers input blstm5] \\
      [--per_layer 4] [--seed 0] [--force]
  python -m espnet_probe.bin.listening_test serve --db exp/listening/NAME/listening.db \\
      [--host 127.0.0.1] [--port 8000] [--origin https://listen.example.org --secure_cookie]
  python -m espnet_probe.bin.listening_test export --db .../listening.db --out answers.csv
  python -m espnet_probe.bin.listening_test score --db .../listening.db [--out_dir DIR]

make: PER_LAYER triplets per (experiment, set, layer) into OUT/listening.db (default: every
probe experiment of the run's plan in --exp_root (espnet_probe/experiments.py; name the oracle's
dir to add it), every vocoded layer, set test; relative wav.scp paths are read from the current
directory, so run it from the recipe dir). An existing database with answers is kept
unless --force.
serve: the web app on waitress (8 threads). It binds to 127.0.0.1 by default; to let raters on
other machines in, bind another address on a trusted network or put it behind a TLS proxy
(then add --origin with the URL raters open, and --secure_cookie). Posts from any other origin
are refused, so --origin is needed wherever the bound address is not that URL (0.0.0.0, a
proxy).
export: every answer with its trial (speakers, utterances, right answer) as CSV.
score: DIR/scores.csv (default DIR: the database's dir) with columns
model,training,set,layer,layer_index,metric,value,ci_low,ci_high,n and metric human_error
(wrong answers / answers, 95 % CI from a rater x triplet bootstrap), and a one-line summary.
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import argparse
import ipaddress
import sys
from pathlib import Path

from espnet_probe.experiments import ExperimentError, probe_experiments
from espnet_probe.listening.store import Store, StoreError, build_db, export_answers
from espnet_probe.listening.triplets import ListeningTestError, build_test
from espnet_probe.scoring.layer_scores import LayerScoringError
from espnet_probe.utils.kaldi_dir import DataDirError

DB_NAME = "listening.db"


def cmd_make(args) -> int:
    exps = [Path(e.dir) for e in probe_experiments(args.exp_root, args.exps, ("probe", "oracle"))]
    triplets = build_test(exps, args.data, args.sets, args.layers, args.per_layer, args.seed)
    db = args.out / DB_NAME
    build_db(db, triplets, args.exp_root, args.seed, force=args.force)
    n_stimuli = len({s.path for t in triplets for s in (t.a, t.b, t.x)})
    n_layers = len({(t.exp, t.set_name, t.layer) for t in triplets})
    print(f"listening_test make: {len(triplets)} triplets ({n_layers} experiment x set x layer "
          f"groups x {args.per_layer}) over {n_stimuli} wavs -> {db}", file=sys.stderr)
    print(f"serve it with: python -m espnet_probe.bin.listening_test serve --db {db}", file=sys.stderr)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def cmd_serve(args) -> int:
    from espnet_probe.listening.app import THREADS, create_app, make_server

    try:
        app = create_app(args.db, secure_cookie=args.secure_cookie, origin=args.origin)
    except ValueError as e:  # an origin the server cannot enforce: say so, before binding
        raise ListeningTestError(str(e)) from None
    try:
        server = make_server(app, args.host, args.port, THREADS)
    except ValueError as e:
        raise ListeningTestError(f"{e} (give --origin)") from None
    if not _is_loopback(args.host):
        bar = "!" * 78
        print(f"{bar}\nWARNING: binding to {args.host}, not loopback: anyone who can reach this "
              f"address and port can take part\nand fetch the test audio. Plain HTTP: tokens and "
              f"answers cross the network unencrypted.\nUse a trusted network or a TLS reverse "
              f"proxy (with --secure_cookie).\n{bar}", file=sys.stderr)
    with Store(args.db) as store:
        n_trials, n_answers = store.n_trials(), store.n_answers()
    print(f"listening_test serve: {args.db} ({n_trials} trials, {n_answers} answers so far) on "
          f"{app.config['PUBLIC_ORIGIN']}/ with {THREADS} threads; Ctrl-C stops",
          file=sys.stderr)
    server.run()
    return 0


def cmd_export(args) -> int:
    with Store(args.db) as store:
        n = export_answers(store, args.out)
    print(f"listening_test export: {n} answers -> {args.out}", file=sys.stderr)
    return 0


def cmd_score(args) -> int:
    # imported here: analysis pulls in torch (via speaker_id), which serving does not need
    from espnet_probe.listening.analysis import human_error_rows, summary_line, write_human_scores

    out = (args.out_dir or args.db.parent) / "scores.csv"
    with Store(args.db) as store:
        groups, answers = store.trial_groups(), store.answer_rows()
    rows = human_error_rows(groups, answers)
    write_human_scores(out, rows)
    print(summary_line(answers, rows, len(groups), out))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="draw the triplets and build OUT/listening.db")
    make.add_argument("--exp_root", type=Path, default=Path("exp"))
    make.add_argument("--data", type=Path, default=Path("data"), help="holds <set>/utt2spk")
    make.add_argument("--out", type=Path, required=True, help="test dir, e.g. exp/listening/pilot")
    make.add_argument("--exps", nargs="+", help="probe experiment dirs, under --exp_root or paths "
                                                "(default: every probe experiment of the plan)")
    make.add_argument("--sets", nargs="+", default=["test"], help="decoded sets, e.g. test test_snr10")
    make.add_argument("--layers", nargs="+", help="layer names (default: every vocoded layer)")
    make.add_argument("--per_layer", type=int, default=4, help="triplets per experiment x set x layer")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--force", action="store_true", help="replace a database that has answers")
    make.set_defaults(run=cmd_make)
    serve = sub.add_parser("serve", help="run the web app")
    serve.add_argument("--db", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--origin", help="the URL raters open, e.g. https://listen.example.org "
                       "(default: http://HOST:PORT); posts from other origins are refused")
    serve.add_argument("--secure_cookie", action="store_true",
                       help="send the rater cookie over HTTPS only (behind a TLS proxy)")
    serve.set_defaults(run=cmd_serve)
    export = sub.add_parser("export", help="answers as CSV")
    export.add_argument("--db", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(run=cmd_export)
    score = sub.add_parser("score", help="human error per layer -> scores.csv")
    score.add_argument("--db", type=Path, required=True)
    score.add_argument("--out_dir", type=Path, help="default: the database's dir")
    score.set_defaults(run=cmd_score)
    args = p.parse_args(argv)
    try:
        return args.run(args)
    except (ListeningTestError, StoreError, DataDirError, LayerScoringError, ExperimentError,
            OSError) as e:
        print(f"listening_test {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
