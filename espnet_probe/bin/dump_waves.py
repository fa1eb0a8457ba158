"""Waveforms of featurised sets as ark/scp, for models that take raw audio (their own frontend).

  python -m espnet_probe.bin.dump_waves --data_root data --dump_root dump/fbank --sets test test_snr0
  python -m espnet_probe.bin.dump_waves --data_dir data/test --dump_dir dump/fbank/test

writes <dump>/<set>/{wave.ark,wave.scp,wave_shape} and their stamp (.wave.done); an up-to-date
dump is kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_probe.audio.fbank import FbankConfig
from espnet_probe.audio.io import AudioError
from espnet_probe.data.model_inputs import ModelInputError, dump_waves
from espnet_probe.utils.kaldi_dir import DataDirError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data_root", type=Path, help="with --dump_root and --sets")
    p.add_argument("--dump_root", type=Path)
    p.add_argument("--sets", nargs="+", default=[])
    p.add_argument("--data_dir", type=Path, help="one set: its data dir and --dump_dir")
    p.add_argument("--dump_dir", type=Path)
    p.add_argument("--fbank_config", default="conf/fbank.yaml", help="its hop_length and sample_rate")
    args = p.parse_args(argv)
    pairs = [(args.data_root / s, args.dump_root / s) for s in args.sets] if args.sets else []
    if args.data_dir or args.dump_dir:
        if not (args.data_dir and args.dump_dir):
            p.error("give --data_dir and --dump_dir together")
        pairs.append((args.data_dir, args.dump_dir))
    if not pairs:
        p.error("nothing to do: give --sets (with --data_root/--dump_root) or --data_dir/--dump_dir")
    if args.sets and not (args.data_root and args.dump_root):
        p.error("--sets needs --data_root and --dump_root")
    cfg = FbankConfig.from_yaml(args.fbank_config)
    for data_dir, dump_dir in pairs:
        try:
            n = dump_waves(data_dir, dump_dir, cfg.hop_length, cfg.sample_rate)
        except (ModelInputError, DataDirError, AudioError) as e:
            print(f"dump_waves: error: {e}", file=sys.stderr)
            return 1
        if n == 0:
            print(f"dump_waves {dump_dir.name}: already complete, skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
