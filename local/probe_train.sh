#!/usr/bin/env bash
# Train the layer probes of one ASR model with ESPnet's trainer (espnet_probe.bin.probe_train).
# Resumable: ESPnet's --resume continues from checkpoint.pth; a finished experiment (.done for
# the same settings) is skipped, changed settings start it afresh.
set -euo pipefail
config=""
exp=""
asr_config=""
asr_model=""
asr_init=trained       # trained | random (the control)
train_set=""
valid_set=""
featdir=dump/fbank
ngpu=0
num_threads=1
probe_args=""          # extra ESPnet options, e.g. "--max_epoch 10 --layers input blstm5"
cmd="python -m espnet_probe.bin.run_jobs"
help_message="Usage: $0 --config conf/probe/x.yaml --exp exp/probe_x --asr_config exp/asr_x/config.yaml --asr_model exp/asr_x/valid.loss.ave.pth --train_set train --valid_set dev"
. "$(dirname "$0")/../scripts/parse_options.sh"
. "$(dirname "$0")/../scripts/exp_guard.sh"

for v in config exp asr_config asr_model train_set valid_set; do
  [ -n "${!v}" ] || { echo "$0: --${v} is required" >&2; exit 1; }
done
data=$(python -m espnet_probe.bin.fingerprint "${featdir}/${train_set}" "${featdir}/${valid_set}")
settings="config=$(sha1sum < "${config}" | cut -c1-12) data=${data} asr=$(sha1sum < "${asr_model}" | cut -c1-12) init=${asr_init} train=${train_set} valid=${valid_set} ${probe_args}"
exp_begin "probe" "${exp}" "${settings}" || exit 0

# shellcheck disable=SC2086
exp_train "probe" "${exp}" "${num_threads}" "${cmd}" espnet_probe.bin.probe_train --config "${config}" --output_dir "${exp}" \
    --ngpu "${ngpu}" --resume true \
    --asr_train_config "${asr_config}" --asr_model_file "${asr_model}" --asr_init "${asr_init}" \
    --train_dump_dir "${featdir}/${train_set}" --valid_dump_dir "${featdir}/${valid_set}" ${probe_args} || exit 1
exp_finish "probe" "${exp}" "${settings}"
