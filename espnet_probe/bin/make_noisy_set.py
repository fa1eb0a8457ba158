"""A fixed-SNR noisy copy of a test set (the paper: test-clean at 20, 10 and 0 dB).

  python -m espnet_probe.bin.make_noisy_set --src data/test --dst data/test_snr10 --snr 10 \
      --musan_dir /path/to/musan --wav_dir dump/audio/test_snr10 \
      [--types noise,music,babble] [--config conf/augment.yaml] [--seed 0] [--nj 4]

Utterance ids are those of --src (pair noisy and clean by id); utt2clean is the identity.
Each utterance's noise type is drawn uniformly from --types (default: all three; babble uses
the talker count of conf/augment.yaml). The SNR is not part of the draw, so for one seed every
SNR level mixes an utterance with the same noise recording at the same offset.
"""

from __future__ import annotations

import argparse
import sys

from espnet_probe.audio.io import AudioError
from espnet_probe.audio.mix import MixError
from espnet_probe.data.augment import (AugmentConfigError, MusanError, NOISE_TYPES, load_config,
                                       make_noisy_set)
from espnet_probe.utils.kaldi_dir import DataDirError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", required=True, help="clean Kaldi data dir")
    p.add_argument("--dst", required=True, help="output data dir (replaced atomically)")
    p.add_argument("--snr", type=float, required=True, help="SNR in dB (0.01 dB resolution)")
    p.add_argument("--musan_dir", required=True, help="dir with noise/ music/ speech/ wavs")
    p.add_argument("--wav_dir", required=True, help="where the noisy wavs go")
    p.add_argument("--types", default=",".join(NOISE_TYPES),
                   help="comma-separated noise types to draw from (default: %(default)s)")
    p.add_argument("--config", default="conf/augment.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nj", type=int, default=1, help="worker processes")
    args = p.parse_args(argv)
    if args.nj < 1:
        p.error(f"--nj must be >= 1, got {args.nj}")
    types = tuple(t.strip() for t in args.types.split(",") if t.strip())
    bad = [t for t in types if t not in NOISE_TYPES]
    if bad or not types or len(set(types)) != len(types):
        p.error(f"--types must be distinct names from {', '.join(NOISE_TYPES)}; got {args.types!r}")
    try:
        cfg = load_config(args.config)
        summary = make_noisy_set(args.src, args.dst, args.musan_dir, args.wav_dir, args.snr, cfg,
                                 types=types, seed=args.seed, nj=args.nj)
    except (AudioError, MixError, MusanError, AugmentConfigError, DataDirError) as e:
        print(f"make_noisy_set: error: {e}", file=sys.stderr)
        return 1
    print(summary.line("make_noisy_set", args.dst), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
