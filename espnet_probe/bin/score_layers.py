"""Score every layer of a probe experiment (or the original audio) in one process.

  python -m espnet_probe.bin.score_layers --exp exp/probe_vgg_blstm_small_baseline \\
      --data data --feats_root dump/fbank --trials_dir exp/trials [--nj 2] \\
      [--speaker_model exp/speaker_resnet]
  python -m espnet_probe.bin.score_layers --original --exp exp/score_original \\
      --sets test test_snr20 test_snr10 test_snr0 --data data --trials_dir exp/trials

For each condition and layer: STOI/ESTOI/PESQ against the clean utterance, GE2E (and, with
--speaker_model, ThinResNet) EER/minDCF with bootstrap 95% CIs on TRIALS_DIR/<test>/trials, and
the predicted log-mel's L1 and MCD against the clean log-mel. Writes EXP/score_<set>/<layer>/...
and EXP/scores.csv (model,training,set,layer,layer_index,metric,value,ci_low,ci_high,n). Cached pieces are
reused on a re-run; only what changed is recomputed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from espnet_probe.audio.io import AudioError
from espnet_probe.metrics.mel import MelShapeError
from espnet_probe.metrics.quality import QualityError
from espnet_probe.metrics.trials import TrialsError, read_trials
from espnet_probe.metrics.verification import TrialScoreError
from espnet_probe.scoring.layer_scores import (LayerScoringError, original_audio_jobs,
                                               probe_exp_jobs, score_jobs, split_condition,
                                               write_scores)
from espnet_probe.speaker.embedder import SpeakerScoringError
from espnet_probe.speaker.ge2e import ge2e_embedder
from espnet_probe.utils.checkpoint import CheckpointError
from espnet_probe.utils.device import add_device_argument
from espnet_probe.utils.kaldi_dir import DataDirError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--exp", type=Path, required=True,
                   help="probe experiment dir (with --original: the output dir)")
    p.add_argument("--original", action="store_true",
                   help="score the unprocessed audio of --sets instead of a probe experiment")
    p.add_argument("--sets", nargs="+", default=[], help="with --original: the condition sets")
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--feats_root", type=Path, default=Path("dump/fbank"),
                   help="holds <set>/target.scp, the clean log-mel")
    p.add_argument("--trials_dir", type=Path, required=True, help="holds <test set>/trials")
    p.add_argument("--speaker_model", type=Path,
                   help="trained ThinResNet speaker-encoder experiment (second encoder)")
    p.add_argument("--model", help="model name for the tables (default: the exp dir name)")
    p.add_argument("--training", default="",
                   help="baseline | robust | random (the control); empty for the original audio")
    p.add_argument("--nj", type=int, default=1)
    add_device_argument(p)
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.nj < 1:
        p.error(f"--nj must be >= 1, got {args.nj}")
    if args.original and not args.sets:
        p.error("--original needs --sets")
    start = time.time()
    try:
        if args.original:
            tests = sorted({split_condition(s)[0] for s in args.sets})
        else:
            jobs = probe_exp_jobs(args.exp)
            tests = sorted({j.test_set for j in jobs})
        trials = {t: read_trials(args.trials_dir / t / "trials") for t in tests}
        if args.original:
            jobs = original_audio_jobs(args.data, args.sets, args.exp,
                                       {t: tr.utterances() for t, tr in trials.items()})
        embedders = {"ge2e": ge2e_embedder(args.device)}
        if args.speaker_model:
            from espnet_probe.speaker.embed import resnet_embedder
            embedders["resnet"] = resnet_embedder(args.speaker_model, args.device)
        rows = score_jobs(jobs, args.data, args.feats_root, trials, embedders, args.nj,
                          args.n_boot, args.seed)
        write_scores(args.exp / "scores.csv", rows, args.model or args.exp.name, args.training)
    except (AudioError, DataDirError, LayerScoringError, MelShapeError, QualityError, TrialsError,
            TrialScoreError, SpeakerScoringError, CheckpointError, FileNotFoundError) as e:
        print(f"score_layers: error: {e}", file=sys.stderr)
        return 1
    n_wav = sum(j.wav_scp is not None for j in jobs)
    print(f"score_layers {args.exp}: {len(jobs)} layer x condition jobs ({n_wav} with audio), "
          f"{len(rows)} scores in {args.exp / 'scores.csv'}, {time.time() - start:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
