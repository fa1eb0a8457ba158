"""Synthetic MUSAN-layout noise and music for the embedded corpus (no MUSAN offline).

  python -m espnet_probe.bin.make_synthetic_noise --out data/local/noise --seed 0 \
      [--seconds 30] [--n_music 4]

Writes <out>/noise/synthetic/{white,pink,brown,hum,fan}.wav and
<out>/music/synthetic/pieceNN.wav, 16 kHz mono 16-bit; <out>/speech/ is not touched.
"""

from __future__ import annotations

import argparse
import time

from espnet_probe.data.synth_noise import make_synthetic_noise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="MUSAN-layout dir to write into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=30.0, help="length of each file")
    p.add_argument("--n_music", type=int, default=4, help="number of music pieces")
    args = p.parse_args(argv)
    start = time.time()
    written = make_synthetic_noise(args.out, seed=args.seed, seconds=args.seconds,
                                   n_music=args.n_music)
    print(f"make_synthetic_noise: {len(written['noise'])} noise + {len(written['music'])} "
          f"music files of {args.seconds:g} s in {args.out} ({time.time() - start:.1f} s)",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
