#!/usr/bin/env bash
# Train one CTC ASR model with ESPnet's trainer (through espnet_probe.bin.asr_train, which only
# registers our encoders). Resumable: ESPnet's --resume continues from checkpoint.pth, and a
# finished experiment (.done for the same settings) is skipped.
set -euo pipefail
config=""
exp=""
train_set=""
valid_set=""
featdir=dump/fbank
token_list=""
token_type=char
bpemodel=""
ngpu=0
num_threads=1
asr_args=""            # extra ESPnet options, e.g. "--max_epoch 30 --batch_bins 4000000"
init_from=""           # a trained model of the same shape to start from (its CMVN stats excepted)
cmd="python -m espnet_probe.bin.run_jobs"
help_message="Usage: $0 --config conf/asr/x.yaml --exp exp/asr_x --train_set train --valid_set dev --token_list tokens.txt"
. "$(dirname "$0")/../scripts/parse_options.sh"
. "$(dirname "$0")/../scripts/exp_guard.sh"

for v in config exp train_set valid_set token_list; do
  [ -n "${!v}" ] || { echo "$0: --${v} is required" >&2; exit 1; }
done
data=$(python -m espnet_probe.bin.fingerprint "${featdir}/${train_set}" "${featdir}/${valid_set}")
settings="config=$(sha1sum < "${config}" | cut -c1-12) data=${data} train=${train_set} valid=${valid_set} tokens=$(sha1sum < "${token_list}" | cut -c1-12) ${asr_args}"
if [ -n "${init_from}" ]; then
  [ -f "${init_from}" ] || { echo "$0: --init_from ${init_from}: no such checkpoint" >&2; exit 1; }
  settings+=" init=$(sha1sum < "${init_from}" | cut -c1-12)"
fi
exp_begin "ASR" "${exp}" "${settings}" || exit 0

extra=()
[ -n "${bpemodel}" ] && extra+=(--bpemodel "${bpemodel}")
# the model's own training-set CMVN stats stay: normalize.* is not taken from the init model
[ -n "${init_from}" ] && extra+=(--init_param "${init_from}:::normalize")
# shellcheck disable=SC2086
exp_train "ASR" "${exp}" "${num_threads}" "${cmd}" espnet_probe.bin.asr_train --config "${config}" --output_dir "${exp}" \
    --ngpu "${ngpu}" --num_att_plot 0 --resume true --use_tensorboard false \
    --train_data_path_and_name_and_type "${featdir}/${train_set}/feats.scp,speech,kaldi_ark" \
    --train_data_path_and_name_and_type "${featdir}/${train_set}/text,text,text" \
    --train_shape_file "${featdir}/${train_set}/feats_shape" \
    --valid_data_path_and_name_and_type "${featdir}/${valid_set}/feats.scp,speech,kaldi_ark" \
    --valid_data_path_and_name_and_type "${featdir}/${valid_set}/text,text,text" \
    --valid_shape_file "${featdir}/${valid_set}/feats_shape" \
    --normalize_conf "stats_file=${featdir}/${train_set}/cmvn.npz" \
    --token_list "${token_list}" --token_type "${token_type}" "${extra[@]}" ${asr_args} || exit 1
python -m espnet_probe.bin.experiments trained --exp "${exp}" --train_set "${train_set}" \
  --seconds $(( $(date +%s) - exp_started )) --machine "$(nproc --all) CPU cores, ${ngpu} GPU, ${num_threads} thread(s)"
exp_finish "ASR" "${exp}" "${settings}"
