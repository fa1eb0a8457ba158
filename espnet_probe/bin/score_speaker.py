"""Speaker-verification EER / minDCF of a set of utterances with the GE2E encoder.

  python -m espnet_probe.bin.score_speaker --wav_scp exp/.../wav/wav.scp \\
      --trials data/test/trials --out exp/.../scores/speaker_ge2e \\
      [--nj 2] [--n_boot 1000] [--seed 0] [--p_target 0.01] [--c_miss 1] [--c_fa 1]

Embeds every utterance named in the trials (an utterance missing from wav.scp is an error),
scores each trial by cosine similarity and writes OUT/embeddings.npz (utts, embeddings, status,
digest; reused on a re-run when the audio is unchanged), OUT/scores ('utt1 utt2 score label')
and OUT/result.json (eer in percent with its bootstrap 95% CI, normalised minDCF and CI,
n_target, n_nontarget, and the utterances whose preprocessing needed a fallback).
--nj N embeds in N single-threaded worker processes.
"""

from __future__ import annotations

import argparse
import sys

from espnet_probe.audio.io import AudioError
from espnet_probe.metrics.trials import TrialsError, read_trials
from espnet_probe.metrics.verification import TrialScoreError
from espnet_probe.speaker.embedder import SpeakerScoringError, score_speaker
from espnet_probe.speaker.ge2e import ge2e_embedder
from espnet_probe.utils.device import add_device_argument
from espnet_probe.utils.kaldi_dir import DataDirError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--wav_scp", required=True, help="wav.scp of the audio to score")
    p.add_argument("--trials", required=True, help="trials file: utt1 utt2 target|nontarget")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--nj", type=int, default=1, help="embedding worker processes")
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap replicates (0: no CI)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--p_target", type=float, default=0.01)
    p.add_argument("--c_miss", type=float, default=1.0)
    p.add_argument("--c_fa", type=float, default=1.0)
    add_device_argument(p)
    args = p.parse_args(argv)
    if args.nj < 1:
        p.error(f"--nj must be >= 1, got {args.nj}")
    if args.n_boot < 0:
        p.error(f"--n_boot must be >= 0, got {args.n_boot}")
    try:
        trials = read_trials(args.trials)
        res = score_speaker(args.wav_scp, trials, args.out, args.nj, args.n_boot, args.seed,
                            args.p_target, args.c_miss, args.c_fa,
                            embedder=ge2e_embedder(args.device))
    except (AudioError, DataDirError, TrialsError, TrialScoreError, SpeakerScoringError,
            ValueError) as e:
        print(f"score_speaker: error: {e}", file=sys.stderr)
        return 1
    ci = res["eer_ci"]
    fallbacks = ", ".join(f"{k} {v['count']}" for k, v in res["preprocess"].items())
    print(f"score_speaker {args.out}: EER {res['eer']:.2f}%"
          + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
          + f", minDCF {res['mindcf']:.3f}, {res['n_target']} target + {res['n_nontarget']} "
          f"nontarget trials, {res['n_utts']} utts ({fallbacks})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
