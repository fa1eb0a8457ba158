"""Train frame-wise log-mel probes on every layer of a frozen ESPnet ASR model.

ESPnet's trainer with espnet_probe.tasks.probe.ProbeTask, so every ESPnet training option works
(--resume, --ngpu, checkpoints, DDP; on CPU one process per rank, see tests/test_ddp.py):

  python -m espnet_probe.bin.probe_train --config conf/probe/probe_small.yaml \\
      --asr_train_config exp/asr_x/config.yaml --asr_model_file exp/asr_x/valid.loss.ave.pth \\
      --train_data_path_and_name_and_type dump/fbank/train/feats.scp,speech,kaldi_ark \\
      --train_shape_file dump/fbank/train/feats_shape \\
      --valid_data_path_and_name_and_type dump/fbank/dev/feats.scp,speech,kaldi_ark \\
      --valid_shape_file dump/fbank/dev/feats_shape --output_dir exp/probe_x

  python -m espnet_probe.bin.probe_train --list_layers exp/asr_x/config.yaml exp/asr_x/valid.loss.ave.pth
"""

from __future__ import annotations

import sys

from espnet_probe.asr.register import register_encoders
from espnet_probe.tasks.probe import ProbeTask

# At import time: DDP workers re-import this module and need the encoder names too.
register_encoders()


def get_parser():
    return ProbeTask.get_parser()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--list_layers":
        if len(argv) != 3:
            print("usage: probe_train --list_layers ASR_CONFIG ASR_CHECKPOINT", file=sys.stderr)
            return 2
        from espnet_probe.layers import extract_layers, layer_table, load_asr_model, model_input

        model = load_asr_model(argv[1], argv[2])
        spec = model_input(model)
        print(f"input: {spec.describe()}")
        print(layer_table(extract_layers(model, *spec.dummy(1.0))))
        return 0
    ProbeTask.main(cmd=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
