"""LibriSpeech tree -> Kaldi data dirs (wav.scp -> FLAC, text, utt2spk, spk2utt, utt2gender).

Examples:
  # full corpus, one data dir per subset
  python -m espnet_probe.bin.prepare_librispeech --librispeech_dir /corpora/LibriSpeech \\
      --subsets train-clean-100 dev-clean test-clean --names train dev test --out data
  # download first (resumable; skips subsets already downloaded, by their stamp)
  python -m espnet_probe.bin.prepare_librispeech --download_dir downloads \\
      --subsets dev-clean --out data
  # one small subset split into unseen-speaker parts
  python -m espnet_probe.bin.prepare_librispeech --librispeech_dir ../shared/data/LibriSpeech \\
      --subsets train-clean-5 --split_by_speaker train=14,dev=2,test=4 --out data
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from espnet_probe.data.librispeech import URL_BASE, UTT_CHOICES, download_subsets, prepare
from espnet_probe.utils.kaldi_dir import DataDirError, write_data_dir


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--librispeech_dir", type=Path,
                     help="existing copy: the folder holding the subset folders (or its parent)")
    src.add_argument("--download_dir", type=Path,
                     help="download missing subsets into DIR/LibriSpeech and use that")
    p.add_argument("--subsets", nargs="+", required=True,
                   help="subset folder names, e.g. train-clean-100 dev-clean test-clean")
    p.add_argument("--names", nargs="+", default=None,
                   help="output data dir names, one per subset (default: subset with _), or "
                        "the part names of an unnamed --split_by_speaker spec")
    p.add_argument("--split_by_speaker", default=None, metavar="SPEC",
                   help="split the ONE subset by speaker: 'train=14,dev=2,test=4', "
                        "'train=0.7,dev=0.1,test=0.2', one count may be 'rest'")
    p.add_argument("--seed", type=int, default=0, help="seed for the split and utterance limit")
    p.add_argument("--max_utts_per_spk", type=int, default=None,
                   help="keep at most N utterances per speaker (quick runs)")
    p.add_argument("--utt_choice", choices=UTT_CHOICES, default="random",
                   help="which utterances --max_utts_per_spk keeps: a seeded random choice, or "
                        "each speaker's shortest (quick runs)")
    p.add_argument("--check_audio", action=argparse.BooleanOptionalAction, default=True,
                   help="read every FLAC header: empty, corrupt, not 16 kHz mono are errors")
    p.add_argument("--out", type=Path, default=Path("data"), help="parent of the data dirs")
    p.add_argument("--url_base", default=URL_BASE, help="where <subset>.tar.gz are served")
    p.add_argument("--keep_archives", action="store_true",
                   help="keep the downloaded .tar.gz after extraction")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    t0 = time.time()
    try:
        root = args.librispeech_dir
        if root is None:
            root = download_subsets(args.download_dir, args.subsets, url_base=args.url_base,
                                    keep_archives=args.keep_archives)
        sets = prepare(root, args.subsets, names=args.names, split_spec=args.split_by_speaker,
                       seed=args.seed, max_utts_per_spk=args.max_utts_per_spk,
                       check_audio=args.check_audio, utt_choice=args.utt_choice)
        for s in sets:
            write_data_dir(args.out / s.name, s.data)
            print(f"{args.out / s.name}: {s.summary()}")
    except (DataDirError, ValueError, OSError) as e:
        print(f"prepare_librispeech: error: {e}", file=sys.stderr)
        return 1
    n = sum(len(s.data.utt2spk) for s in sets)
    print(f"prepare_librispeech: {len(sets)} data dir(s), {n} utterances in "
          f"{time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
