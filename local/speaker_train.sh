#!/usr/bin/env bash
# Train the ThinResNet + GhostVLAD speaker encoder with ESPnet's trainer
# (espnet_probe.bin.speaker_train) on a Kaldi data dir. Validation: a seeded --valid_fraction of
# each training speaker's utterances, held out of training (see the bin's docstring).
# Resumable: ESPnet's --resume continues from checkpoint.pth; a finished experiment (.done for
# the same settings) is skipped, changed settings start it afresh.
set -euo pipefail
config=""
exp=""
train_dir=""           # Kaldi data dir: wav.scp (16 kHz) + utt2spk
valid_fraction=0.1
split_seed=0
ngpu=0
num_threads=1
speaker_args=""        # extra ESPnet options, e.g. "--max_epoch 30 --batch_size 64"
cmd="python -m espnet_probe.bin.run_jobs"
help_message="Usage: $0 --config conf/speaker/resnet_small.yaml --exp exp/speaker_resnet_small --train_dir data/train [--valid_fraction 0.1] [--split_seed 0] [--speaker_args '...'] [--cmd '...']"
. "$(dirname "$0")/../scripts/parse_options.sh"
. "$(dirname "$0")/../scripts/exp_guard.sh"

for v in config exp train_dir; do
  [ -n "${!v}" ] || { echo "$0: --${v} is required" >&2; exit 1; }
done
[ -f "${train_dir}/wav.scp" ] && [ -f "${train_dir}/utt2spk" ] \
  || { echo "$0: ${train_dir} needs wav.scp and utt2spk" >&2; exit 1; }
data_sum=$(python -m espnet_probe.bin.fingerprint "${train_dir}")  # tables and audio files
settings="config=$(sha1sum < "${config}" | cut -c1-12) data=${train_dir}:${data_sum} valid=${valid_fraction} seed=${split_seed} ${speaker_args}"
exp_begin "speaker encoder" "${exp}" "${settings}" || exit 0

# shellcheck disable=SC2086
exp_train "speaker encoder" "${exp}" "${num_threads}" "${cmd}" espnet_probe.bin.speaker_train --config "${config}" --output_dir "${exp}" \
    --ngpu "${ngpu}" --resume true --train_data_dir "${train_dir}" \
    --valid_fraction "${valid_fraction}" --split_seed "${split_seed}" ${speaker_args} || exit 1
exp_finish "speaker encoder" "${exp}" "${settings}"
