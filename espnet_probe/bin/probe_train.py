"""Train frame-wise log-mel probes on every layer of a frozen ESPnet ASR model.

ESPnet's trainer with espnet_probe.tasks.probe.ProbeTask, so every ESPnet training option works
(--resume, --ngpu, checkpoints, DDP; on CPU one process per rank, see tests/test_ddp.py):

  python -m espnet_probe.bin.probe_train --config conf/probe/probe_small.yaml \\
      --asr_train_config exp/asr_x/config.yaml --asr_model_file exp/asr_x/valid.loss.ave.pth \\
      --train_data_path_and_name_and_type dump/fbank/train/feats.scp,speech,kaldi_ark \\
      --train_shape_file dump/fbank/train/feats_shape \\
      --valid_data_path_and_name_and_type dump/fbank/dev/feats.scp,speech,kaldi_ark \\
      --valid_shape_file dump/fbank/dev/feats_shape --output_dir exp/probe_x

  python -m espnet_probe.bin.probe_train --config conf/probe/probe_small.yaml \\
      --asr_train_config exp/asr_x/config.yaml --asr_model_file exp/asr_x/valid.loss.ave.pth \\
      --train_dump_dir dump/fbank/train --valid_dump_dir dump/fbank/dev --output_dir exp/probe_x

  python -m espnet_probe.bin.probe_train --list_layers exp/asr_x/config.yaml exp/asr_x/valid.loss.ave.pth
  python -m espnet_probe.bin.probe_train --list_layers whisper:tiny.en   # or a CTranslate2 dir / .pt

--train_dump_dir / --valid_dump_dir give the data as dump dirs instead: the entries the probes
need are chosen here, from the ASR model and the (config's or command line's) target:
"speech" = the input the model takes (feats.scp, or wave.scp for a model with its own frontend,
then also "mel" = feats.scp, the heard log-mel and the target frames), and for target: clean
"target" = target.scp.
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import argparse
import sys
from pathlib import Path

from espnet_probe.asr.register import register_encoders
from espnet_probe.families import UnsupportedFamily
from espnet_probe.tasks.probe import ProbeTask
from espnet_probe.utils.checkpoint import CheckpointError, checked_init_params

# At import time: DDP workers re-import this module and need the encoder names too.
register_encoders()


def get_parser():
    return ProbeTask.get_parser()


def dump_dir_entries(argv: list[str], train_dir: Path, valid_dir: Path) -> list[str]:
    """ESPnet's data options for the probes of the model and target ``argv`` describes."""
    from espnet_probe.data.model_inputs import INPUT_FILES, config_input_kind

    args = get_parser().parse_args(argv)
    if not args.asr_train_config:
        raise SystemExit("probe_train: --train_dump_dir needs --asr_train_config")
    # from the config, not a built model: building one logs before ESPnet sets up its logging
    kind = config_input_kind(args.asr_train_config)
    speech, shape = INPUT_FILES[kind]
    entries = []
    for phase, dump_dir in (("train", train_dir), ("valid", valid_dir)):
        data = [f"{dump_dir}/{speech},speech,kaldi_ark"]
        if kind == "wave":
            data.append(f"{dump_dir}/feats.scp,mel,kaldi_ark")
        if args.target == "clean":
            data.append(f"{dump_dir}/target.scp,target,kaldi_ark")
        for entry in data:
            entries += [f"--{phase}_data_path_and_name_and_type", entry]
        entries += [f"--{phase}_shape_file", f"{dump_dir}/{shape}"]
    return entries


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--list_layers":
        if len(argv) not in (2, 3):
            print("usage: probe_train --list_layers ASR_CONFIG ASR_CHECKPOINT\n"
                  "       probe_train --list_layers WHISPER (CTranslate2 dir, openai-whisper .pt, "
                  "whisper:tiny.en)", file=sys.stderr)
            return 2
        from espnet_probe.asr.whisper import WhisperSourceError, load_whisper
        from espnet_probe.asr.model_input import model_input
        from espnet_probe.layers import extract_layers, layer_table, load_asr_model

        try:
            model = load_asr_model(argv[1], argv[2]) if len(argv) == 3 else load_whisper(argv[1])
            spec = model_input(model)
            table = layer_table(extract_layers(model, *spec.dummy(1.0)))
        except (CheckpointError, WhisperSourceError, FileNotFoundError, UnsupportedFamily) as e:
            print(f"probe_train: error: {e}", file=sys.stderr)
            return 1
        print(f"input: {spec.describe()}")
        print(table)
        return 0
    dirs = argparse.ArgumentParser(add_help=False)
    dirs.add_argument("--train_dump_dir", type=Path)
    dirs.add_argument("--valid_dump_dir", type=Path)
    given, argv = dirs.parse_known_args(argv)
    if (given.train_dump_dir is None) != (given.valid_dump_dir is None):
        raise SystemExit("probe_train: give both --train_dump_dir and --valid_dump_dir, or neither")
    if given.train_dump_dir is not None:
        argv += dump_dir_entries(argv, given.train_dump_dir, given.valid_dump_dir)
    try:
        with checked_init_params(argv) as argv:
            ProbeTask.main(cmd=argv)
    except (CheckpointError, FileNotFoundError, UnsupportedFamily) as e:  # the ASR model or an --init_param file
        print(f"probe_train: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
