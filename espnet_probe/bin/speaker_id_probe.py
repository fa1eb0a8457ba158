"""Linear speaker-ID probe of every layer of a trained ASR encoder (held-out speaker accuracy).

  python -m espnet_probe.bin.speaker_id_probe --asr_exp exp/asr_vgg_blstm_small_baseline \\
      --feats_dir dump/fbank/train --out exp/asr_vgg_blstm_small_baseline/speaker_id_train
  ... --asr_init random --out exp/.../speaker_id_train_random     # the random-encoder control

Writes <out>/results.csv (layer,layer_index,accuracy,ci_low,ci_high,n,n_speakers,chance) and
<out>/results.json (the same plus split sizes, pooling, convergence and the inputs digest).
A finished <out> whose stamp matches (espnet_probe.utils.freshness: the fingerprint of config,
checkpoint and the feature dir, and every option that changes the numbers; not --batch_frames)
is kept as it is. See espnet_probe/probe/speaker_id.py for the design.
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import argparse
import logging
import sys
import time
from pathlib import Path

from espnet_probe.asr.brought import best_checkpoint
from espnet_probe.families import UnsupportedFamily
from espnet_probe.probe.speaker_id import DEFAULT_C, PER_UTTERANCE, POOLINGS
from espnet_probe.utils.device import add_device_argument
from espnet_probe.utils.freshness import Stamp, fingerprint


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--asr_exp", required=True, type=Path, help="config.yaml + valid.loss.{ave,best}.pth")
    p.add_argument("--asr_init", choices=["trained", "random"], default="trained",
                   help="random = the control: encoder re-initialised with --seed")
    p.add_argument("--feats_dir", required=True, type=Path, help="dump/fbank/<train_set>: feats.scp, utt2spk")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--held_out", type=float, default=0.25, help="fraction of each speaker's utterances")
    p.add_argument("--seed", type=int, default=0, help="split (and random-encoder) seed")
    p.add_argument("--pooling", choices=POOLINGS, default="mean_std")
    p.add_argument("--C", type=float, default=DEFAULT_C, help="inverse L2 strength of the classifier")
    p.add_argument("--batch_frames", type=int, default=1000,
                   help="padded frames per batch (on a CPU, 1,000 pool the layers 2.5x faster than\n"
                        "20,000: the 1280-dim conv maps of small batches stay in cache, measured)")
    add_device_argument(p)
    args = p.parse_args(argv)
    if not 0 < args.held_out < 1:
        p.error(f"--held_out must lie strictly between 0 and 1, got {args.held_out}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from espnet_probe.layers import load_asr_model
    from espnet_probe.probe.model import reinitialise_encoder
    from espnet_probe.probe.speaker_id import speaker_id_probe, write_results
    from espnet_probe.utils.kaldi_dir import DataDirError

    torch.set_num_threads(1)
    start = time.time()
    try:
        config = args.asr_exp / "config.yaml"
        checkpoint = best_checkpoint(args.asr_exp)
        settings = {"asr_init": args.asr_init, "held_out": args.held_out, "seed": args.seed,
                    "pooling": args.pooling, "C": args.C}
        files = [config, checkpoint, args.feats_dir / "feats.scp", args.feats_dir / "utt2spk"]
        for path in files:
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found")
        digest = fingerprint(config, checkpoint, args.feats_dir)
        stamp, stamped = Stamp(args.out), {**settings, "inputs_digest": digest}
        if stamp.state(stamped) == "done" and (args.out / PER_UTTERANCE).is_file():
            print(f"speaker_id_probe {args.out}: already done with the same inputs, skipped",
                  file=sys.stderr)
            return 0
        stamp.begin(stamped, resumable=False)
        model = load_asr_model(config, checkpoint)
        if args.asr_init == "random":  # on the CPU's generator: the same control on any device
            reinitialise_encoder(model, seed=args.seed)
        model.to(args.device)
        results = speaker_id_probe(model, args.feats_dir, args.held_out, args.seed,
                                   args.batch_frames, args.pooling, args.C)
    except (DataDirError, FileNotFoundError, ValueError, UnsupportedFamily) as e:
        print(f"speaker_id_probe: error: {e}", file=sys.stderr)
        return 1
    results = {"inputs_digest": digest, "asr_exp": str(args.asr_exp), "checkpoint": str(checkpoint),
               "feats_dir": str(args.feats_dir), **settings, **results}
    write_results(args.out, results)
    stamp.finish(stamped)
    print(f"speaker_id_probe {args.asr_exp.name} ({args.asr_init}) on {results['set']}: "
          f"{results['n_speakers']} speakers, {results['n_held_out']} held-out utts, chance "
          f"{results['chance']:.1%}; accuracy "
          + ", ".join(f"{row['layer']} {row['accuracy']:.1%}" for row in results["layers"])
          + f" ({time.time() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
