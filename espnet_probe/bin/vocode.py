"""Log-mels (kaldi scp of (T, n_mels) matrices) -> waveforms by pseudo-inverse + Griffin-Lim.

  python -m espnet_probe.bin.vocode --mel_scp exp/probe/blstm3/test/mel.scp \
      --out_dir exp/probe/blstm3/test/vocoded --fbank_config conf/fbank.yaml \
      --config conf/vocoder.yaml --lengths_from data/test/wav.scp
  ... --nj 4 --job 2     # one job of four (run under ${cmd} JOB=1:4): writes wav.2.scp
  ... --nj 4 --merge     # join wav.{1..4}.scp into wav.scp once all jobs finished
  ... --num_threads 2    # one job using two cores (batches run side by side)

Writes OUT_DIR/wav/<utt>.wav (16-bit PCM) and OUT_DIR/wav.scp; re-running skips utterances
already written. --lengths_from gives exact output lengths: a wav.scp (*.scp; a segments file
beside it is honoured) or a table of sample counts (utt2num_samples); without it an utterance of
T frames becomes (T - 1) * hop samples.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from espnet_probe.audio.features import FbankConfig
from espnet_probe.audio.io import AudioError
from espnet_probe.audio.vocoder import (VocodeError, VocoderConfig, merge_wav_scps, torch_threads,
                                        vocode_scp)
from espnet_probe.utils.kaldi_dir import DataDirError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mel_scp", required=True, help="kaldi scp of (T, n_mels) log-mels")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--fbank_config", default="conf/fbank.yaml",
                   help="front end whose log-mel is inverted")
    p.add_argument("--config", default="conf/vocoder.yaml", help="Griffin-Lim settings")
    p.add_argument("--lengths_from", help="wav.scp or utt2num_samples giving exact lengths")
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--job", type=int, help="which job to run (1-based); writes wav.JOB.scp")
    p.add_argument("--merge", action="store_true", help="merge wav.{1..nj}.scp into wav.scp")
    p.add_argument("--num_threads", type=int, default=1,
                   help="batches vocoded at once, one torch thread each (keep nj x this <= cores)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.nj < 1:
        p.error("--nj must be >= 1")
    if args.merge and args.job is not None:
        p.error("give either --job or --merge, not both")
    if args.nj > 1 and args.job is None and not args.merge:
        p.error(f"--nj {args.nj} needs --job J (one job) or --merge")
    if args.num_threads < 1:
        p.error("--num_threads must be >= 1")

    try:
        if args.merge:
            summary = merge_wav_scps(args.mel_scp, args.out_dir, args.nj)
        else:
            cfg = FbankConfig.from_yaml(args.fbank_config)
            vocoder_cfg = VocoderConfig.from_yaml(args.config)
            # parallelism comes from concurrent batches, not intra-op threads (parallel_map)
            with torch_threads(1):
                summary = vocode_scp(args.mel_scp, args.out_dir, cfg, vocoder_cfg,
                                     args.lengths_from, args.nj, args.job, args.num_threads)
    except (VocodeError, AudioError, DataDirError, ValueError) as e:
        print(f"vocode: error: {e}", file=sys.stderr)
        return 1
    print(f"vocode {args.out_dir}: {json.dumps(summary)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
