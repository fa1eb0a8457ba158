"""MUSAN-layout noise for a run without MUSAN: synthetic noise and music, and babble voices.

  python -m espnet_probe.bin.make_synthetic_noise --out data/local/noise --seed 0 \
      [--seconds 30] [--n_music 4] [--babble_from data/train]

Writes <out>/noise/synthetic/{white,pink,brown,hum,fan}.wav and <out>/music/synthetic/pieceNN.wav,
16 kHz mono 16-bit.  Babble (<out>/speech/) is real speech: the embedded corpus brings its own
voices; with --babble_from, a run that has none takes them from its training set's speakers
(<out>/speech/from_training/<speaker>.wav and file2spk, espnet_probe.data.babble), never an
utterance's own speaker.  Speech already in <out>/speech/ from elsewhere is kept and used instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from espnet_probe.audio.io import AudioError
from espnet_probe.data.babble import make_babble_voices
from espnet_probe.data.synth_noise import make_synthetic_noise
from espnet_probe.utils.kaldi_dir import DataDirError

FROM_TRAINING = "from_training"


def other_voices(speech_dir: Path) -> list[Path]:
    """Babble speech in ``speech_dir`` that was not made from the training set."""
    return [p for p in speech_dir.rglob("*.wav") if FROM_TRAINING not in p.relative_to(speech_dir).parts]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="MUSAN-layout dir to write into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=30.0, help="length of each file")
    p.add_argument("--n_music", type=int, default=4, help="number of music pieces")
    p.add_argument("--babble_from", type=Path,
                   help="training data dir whose speakers become the babble voices, unless\n"
                        "<out>/speech/ already holds other speech")
    args = p.parse_args(argv)
    start = time.time()
    written = make_synthetic_noise(args.out, seed=args.seed, seconds=args.seconds,
                                   n_music=args.n_music)
    print(f"make_synthetic_noise: {len(written['noise'])} noise + {len(written['music'])} "
          f"music files of {args.seconds:g} s in {args.out} ({time.time() - start:.1f} s)",
          flush=True)
    if args.babble_from is not None and not other_voices(args.out / "speech"):
        start = time.time()
        try:
            made = make_babble_voices(args.babble_from, args.out / "speech" / FROM_TRAINING, args.seed)
        except (AudioError, DataDirError) as e:
            print(f"make_synthetic_noise: error: {e}", file=sys.stderr)
            return 1
        print(f"make_synthetic_noise: babble voices of {made['speakers']} speakers of "
              f"{args.babble_from} ({made['seconds']:.0f} s of speech; never mixed into their own "
              f"utterances) in {args.out / 'speech' / FROM_TRAINING} ({time.time() - start:.1f} s)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
