"""Train an ESPnet ASR model with espnet-probe's encoders available.

Exactly ``python -m espnet2.bin.asr_train`` (every ESPnet option: --config,
--collect_stats, --resume, --ngpu, DDP ...) plus ``encoder: vgg_blstm`` and
``encoder: blstm``.  The configs in conf/asr/ hold the model and optimisation;
the command line gives the data (features as kaldi_ark, (T, 240) per utterance),
the token list (and --bpemodel for token_type bpe), the CMVN stats and output_dir:

  python -m espnet_probe.bin.asr_train --config conf/asr/vgg_blstm_small.yaml \\
      --ngpu 0 --token_list TOKENS [--bpemodel BPE.model] \\
      --normalize_conf stats_file=STATS.npz \\
      --train_data_path_and_name_and_type DUMP/train/feats.scp,speech,kaldi_ark \\
      --train_data_path_and_name_and_type DUMP/train/text,text,text \\
      --train_shape_file DUMP/train/feats_shape \\
      --valid_data_path_and_name_and_type DUMP/dev/feats.scp,speech,kaldi_ark \\
      --valid_data_path_and_name_and_type DUMP/dev/text,text,text \\
      --valid_shape_file DUMP/dev/feats_shape \\
      --output_dir EXP/asr_vgg_blstm_small [--resume true]

A config may grow its encoder layer by layer first (``encoder_pretraining``, see
espnet_probe.asr.pretraining): each stage is one more ESPnet run under output_dir/pretrain/.

STATS.npz is either the feature stage's cmvn.npz or ESPnet's own collect-stats
pass: the same command with ``--collect_stats true --normalize none
--output_dir EXP/asr_stats`` (no stats_file), which writes
EXP/asr_stats/train/feats_stats.npz.
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import sys

from espnet_probe.asr.pretraining import run_with_pretraining
from espnet_probe.asr.register import register_encoders
from espnet_probe.utils.checkpoint import CheckpointError, checked_init_params

# At import time on purpose: multi-GPU training spawns workers that re-import
# this module (as __mp_main__) but do not run main(); they need the names too.
register_encoders()


def get_parser():
    from espnet2.tasks.asr import ASRTask

    return ASRTask.get_parser()


def _keep_one_process_group() -> None:
    """Under DDP, let every ESPnet run of this process share the first run's process group.

    With an external launcher (DDP on CPU, torchrun) one process runs every growth stage, and
    ESPnet sets up a process group at the start of each run; setting one up again on the same
    rendezvous after destroying the last is unreliable (gloo: "Connection reset by peer" or a
    hang in the next stage, measured).
    """
    import torch.distributed as dist
    from espnet2.train.distributed_utils import DistributedOption

    first_setup = DistributedOption.init_torch_distributed

    def setup_unless_done(self):
        if not (dist.is_available() and dist.is_initialized()):
            first_setup(self)

    DistributedOption.init_torch_distributed = setup_unless_done


def train_once(cmd):
    import torch.distributed as dist
    from espnet2.tasks.asr import ASRTask

    with checked_init_params(cmd) as cmd:
        ASRTask.main(cmd=cmd)
    # Only rank 0 writes checkpoints: every rank waits for them before the next stage reads one.
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def main(argv=None):
    import torch.distributed as dist

    register_encoders()
    _keep_one_process_group()
    try:
        run_with_pretraining(sys.argv[1:] if argv is None else argv, train_once)
    except CheckpointError as e:  # an --init_param file
        print(f"asr_train: error: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
