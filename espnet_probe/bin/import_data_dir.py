"""Import an existing Kaldi data dir: validate it, check every utterance's audio, copy it.

  python -m espnet_probe.bin.import_data_dir --src /corpora/mydata/train --dst data/train
  python -m espnet_probe.bin.import_data_dir --src old/dev --dst data/dev --fix --nj 2

wav.scp entries may be paths or ``cmd |`` pipes, with or without a segments file. Without
--fix, unsorted or inconsistent files are errors; --fix sorts, drops utterances missing from a
file, regenerates spk2utt and says what it changed. Audio problems (missing, empty, corrupt,
not 16 kHz mono, failing pipe) are all collected and the first few reported with their ids.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from espnet_probe.audio.io import SAMPLE_RATE
from espnet_probe.data.import_dir import import_data_dir
from espnet_probe.data.kaldi_dir import DataDirError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, required=True, help="existing Kaldi data dir")
    p.add_argument("--dst", type=Path, required=True, help="where to put it, e.g. data/NAME")
    p.add_argument("--fix", action="store_true",
                   help="sort tables, drop inconsistent utterances, regenerate spk2utt")
    p.add_argument("--check_audio", action=argparse.BooleanOptionalAction, default=True,
                   help="load every utterance's audio and report problems (default: on)")
    p.add_argument("--require_text", action=argparse.BooleanOptionalAction, default=True,
                   help="a text file is required (default: on)")
    p.add_argument("--nj", type=int, default=1, help="parallel audio readers (threads)")
    p.add_argument("--sample_rate", type=int, default=SAMPLE_RATE,
                   help="the sample rate every utterance must have")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    t0 = time.time()
    try:
        rep = import_data_dir(args.src, args.dst, fix=args.fix, audio_check=args.check_audio,
                              require_text=args.require_text, nj=args.nj,
                              sample_rate=args.sample_rate)
    except DataDirError as e:
        print(f"import_data_dir: error: {e}", file=sys.stderr)
        return 1
    for change in rep.changes:
        print(f"fixed: {change}", file=sys.stderr)
    if args.fix and not rep.changes:
        print("fixed: nothing needed fixing", file=sys.stderr)
    if rep.ignored_files:
        print(f"not copied (not data-dir tables this recipe uses): "
              f"{', '.join(rep.ignored_files)}", file=sys.stderr)
    audio = (f", audio checked ({rep.audio_seconds / 3600:.2f} h)" if rep.audio_checked
             else ", audio not checked")
    print(f"import_data_dir: {args.src} -> {args.dst}: {rep.n_utts} utterances, {rep.n_spk} "
          f"speakers, {rep.n_recordings} recordings{audio} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
