"""Noisy copies of a training data dir with MUSAN noise, music and babble (x-vector style).

  python -m espnet_probe.bin.augment_data_dir --src data/train --dst data/train_aug \
      --musan_dir /path/to/musan --wav_dir dump/audio/train_aug --config conf/augment.yaml \
      --seed 0 --nj 4

Each utterance gets ``copies`` noisy copies (conf/augment.yaml), each of a different type drawn
uniformly, at an SNR drawn uniformly from that type's range. The copy of <utt> is <utt>-<type>.
Writes 16-bit wavs as <wav_dir>/<spk>/<utt>-<type>.wav (paths in wav.scp as given, so a
relative --wav_dir stays relative to the recipe dir) and a data dir with wav.scp, text, utt2spk,
spk2utt, utt2clean and noise_info. The same --seed gives identical output for any --nj
(every utterance's random choices are seeded from the seed and its id). --nj worker processes
run inside this one command.
"""

from __future__ import annotations

import argparse
import sys

from espnet_probe.audio.io import AudioError
from espnet_probe.audio.mix import MixError
from espnet_probe.data.augment import AugmentConfigError, MusanError, augment_data_dir, load_config
from espnet_probe.utils.kaldi_dir import DataDirError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", required=True, help="clean Kaldi data dir")
    p.add_argument("--dst", required=True, help="output data dir (replaced atomically)")
    p.add_argument("--musan_dir", required=True, help="dir with noise/ music/ speech/ wavs")
    p.add_argument("--wav_dir", required=True, help="where the noisy wavs go")
    p.add_argument("--config", default="conf/augment.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nj", type=int, default=1, help="worker processes")
    args = p.parse_args(argv)
    if args.nj < 1:
        p.error(f"--nj must be >= 1, got {args.nj}")
    try:
        cfg = load_config(args.config)
        summary = augment_data_dir(args.src, args.dst, args.musan_dir, args.wav_dir, cfg,
                                   seed=args.seed, nj=args.nj)
    except (AudioError, MixError, MusanError, AugmentConfigError, DataDirError) as e:
        print(f"augment_data_dir: error: {e}", file=sys.stderr)
        return 1
    print(summary.line("augment_data_dir", args.dst), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
