"""Synthesize the embedded default corpus (espeak-ng voices) into Kaldi data dirs.

    python -m espnet_probe.bin.make_embedded_corpus --out data --seed 0 --nj 2

writes <out>/{train,dev,test}, <out>/local/embedded/{wav/,speakers.tsv,.done} and a babble
pool for the noise stage in <babble_dir> (default <out>/local/noise/speech/espeak).
"""

from __future__ import annotations

import argparse
import sys

from espnet_probe.data.embedded import CorpusConfig, EspeakError, build_corpus


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data", help="data root (default: data)")
    p.add_argument("--seed", type=int, default=0, help="sentences, gains and pauses (default 0)")
    p.add_argument("--nj", type=int, default=2, help="parallel worker processes (default 2)")
    p.add_argument("--utts_per_voice", type=int, default=32,
                   help="utterances per train/dev/test voice (default 32)")
    p.add_argument("--babble_utts", type=int, default=8,
                   help="utterances per babble voice (default 8)")
    p.add_argument("--babble_dir", default="",
                   help="folder for babble wavs, read as MUSAN speech/ "
                        "(default <out>/local/noise/speech/espeak)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if args.nj < 1:
        print(f"error: --nj must be >= 1, got {args.nj}", file=sys.stderr)
        return 2
    cfg = CorpusConfig(out=args.out, seed=args.seed, utts_per_voice=args.utts_per_voice,
                       babble_utts=args.babble_utts, babble_dir=args.babble_dir)
    try:
        s = build_corpus(cfg, nj=args.nj, progress=not args.no_progress)
    except (EspeakError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    splits = " / ".join(f"{n} {k}" for k, n in s["per_split"].items())
    state = "already complete, nothing to do" if s["skipped"] else "generated"
    print(f"embedded corpus in {args.out}: {state}; {s['voices']} voices, {s['utterances']} "
          f"utterances ({splits}), {s['hours']:.3f} h of audio, {s['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
