"""Train an ESPnet ASR model with espnet-probe's encoders available.

Exactly ``python -m espnet2.bin.asr_train`` (every ESPnet option: --config,
--collect_stats, --resume, --ngpu, DDP ...) plus ``encoder: vgg_blstm`` and
``encoder: blstm``.  See conf/asr/*.yaml.
"""

from __future__ import annotations

from espnet_probe.asr.register import register_encoders

# At import time on purpose: multi-GPU training spawns workers that re-import
# this module (as __mp_main__) but do not run main(); they need the names too.
register_encoders()


def get_parser():
    from espnet2.tasks.asr import ASRTask

    return ASRTask.get_parser()


def main(argv=None):
    from espnet2.tasks.asr import ASRTask

    register_encoders()
    ASRTask.main(cmd=argv)


if __name__ == "__main__":
    main()
