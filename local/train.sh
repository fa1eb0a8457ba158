#!/usr/bin/env bash
# Train one model with ESPnet's trainer, in its own experiment dir (--task):
#   asr      a CTC ASR model (espnet_probe.bin.asr_train: ESPnet's ASR task with our encoders)
#   probe    the layer probes of one ASR model (espnet_probe.bin.probe_train)
#   speaker  the ThinResNet + GhostVLAD speaker encoder on a Kaldi data dir
#            (espnet_probe.bin.speaker_train; validation: a seeded --valid_fraction of each
#            training speaker's utterances, held out of training)
# Freshness (espnet_probe/utils/freshness.py, through bin.stamp): the settings are the
# fingerprints of the inputs (config, data, token list, checkpoints) and the options. A run
# finished with the same settings is skipped; changed settings wipe EXP (but its experiment.yaml
# records) and train from scratch, so a stale checkpoint is never resumed; a run killed half-way
# continues (ESPnet's --resume). The console shows each epoch while the job runs.
set -euo pipefail
task=""                # asr | probe | speaker
config=""
exp=""
train_args=""          # extra ESPnet options, e.g. "--max_epoch 30 --batch_bins 4000000"
ngpu=0
num_threads=1
cmd="python -m espnet_probe.bin.run_jobs"
featdir=dump/fbank     # asr, probe: <featdir>/<set> from stage 3
train_set=""
valid_set=""
token_list=""          # asr
token_type=char
bpemodel=""
init_from=""           # asr: a trained model of the same shape to start from (its CMVN stats excepted)
asr_config=""          # probe: the ASR model whose layers are probed
asr_model=""
asr_init=trained       # trained | random (the control)
train_dir=""           # speaker: Kaldi data dir, wav.scp (16 kHz) + utt2spk
valid_fraction=0.1
split_seed=0
help_message="Usage: $0 --task asr|probe|speaker --config CONFIG --exp EXP [options]
  asr:     --train_set T --valid_set V --token_list tokens.txt [--featdir dump/fbank]
           [--token_type char] [--bpemodel M] [--init_from CHECKPOINT]
  probe:   --asr_config exp/asr_x/config.yaml --asr_model exp/asr_x/valid.loss.ave.pth
           --train_set T --valid_set V [--featdir dump/fbank] [--asr_init trained|random]
  speaker: --train_dir data/train [--valid_fraction 0.1] [--split_seed 0]
  all:     [--train_args '...'] [--ngpu 0] [--num_threads 1] [--cmd '...']"
# shellcheck source=scripts/parse_options.sh source-path=SCRIPTDIR/..
. "$(dirname "$0")/../scripts/parse_options.sh"

require() {
  local v
  for v in "$@"; do [ -n "${!v}" ] || { echo "$0: --task ${task} needs --${v}" >&2; exit 1; }; done
}
case "${task}" in
  asr)
    require config exp train_set valid_set token_list
    label=ASR
    module=espnet_probe.bin.asr_train
    inputs=("${config}" "${featdir}/${train_set}" "${featdir}/${valid_set}" "${token_list}"
            ${bpemodel:+"${bpemodel}"} ${init_from:+"${init_from}"})
    options="token_type=${token_type} ${train_args}"
    args=(--num_att_plot 0 --use_tensorboard false
          --train_data_path_and_name_and_type "${featdir}/${train_set}/feats.scp,speech,kaldi_ark"
          --train_data_path_and_name_and_type "${featdir}/${train_set}/text,text,text"
          --train_shape_file "${featdir}/${train_set}/feats_shape"
          --valid_data_path_and_name_and_type "${featdir}/${valid_set}/feats.scp,speech,kaldi_ark"
          --valid_data_path_and_name_and_type "${featdir}/${valid_set}/text,text,text"
          --valid_shape_file "${featdir}/${valid_set}/feats_shape"
          --normalize_conf "stats_file=${featdir}/${train_set}/cmvn.npz"
          --token_list "${token_list}" --token_type "${token_type}")
    [ -n "${bpemodel}" ] && args+=(--bpemodel "${bpemodel}")
    # the model's own training-set CMVN stats stay: normalize.* is not taken from the init model
    [ -n "${init_from}" ] && args+=(--init_param "${init_from}:::normalize")
    ;;
  probe)
    require config exp asr_config asr_model train_set valid_set
    label=probe
    module=espnet_probe.bin.probe_train
    inputs=("${config}" "${asr_model}" "${featdir}/${train_set}" "${featdir}/${valid_set}")
    options="asr_init=${asr_init} ${train_args}"
    args=(--asr_train_config "${asr_config}" --asr_model_file "${asr_model}" --asr_init "${asr_init}"
          --train_dump_dir "${featdir}/${train_set}" --valid_dump_dir "${featdir}/${valid_set}")
    ;;
  speaker)
    require config exp train_dir
    if [ ! -f "${train_dir}/wav.scp" ] || [ ! -f "${train_dir}/utt2spk" ]; then
      echo "$0: ${train_dir} needs wav.scp and utt2spk" >&2; exit 1
    fi
    label="speaker encoder"
    module=espnet_probe.bin.speaker_train
    inputs=("${config}" "${train_dir}")  # the data dir's tables and audio files
    options="valid_fraction=${valid_fraction} split_seed=${split_seed} ${train_args}"
    args=(--train_data_dir "${train_dir}" --valid_fraction "${valid_fraction}" --split_seed "${split_seed}")
    ;;
  *) echo "$0: --task must be asr, probe or speaker, got '${task}'" >&2; exit 1 ;;
esac

stamp() { python -m espnet_probe.bin.stamp "$1" "${exp}" --inputs "${inputs[@]}" --options="${options}"; }
state=$(stamp begin) || exit 1
case "${state}" in
  done) echo "${label} ${exp}: already trained, skipped" >&2; exit 0 ;;
  changed) echo "${label} ${exp}: settings changed, training from scratch" >&2 ;;
esac
started=$(date +%s)

# The job (through the backend ${cmd}, writing train.log) runs in the background while
# bin.follow_training prints its ESPnet epochs; the follower stops once the job has exited.
# shellcheck disable=SC2086
PROBE_HEARTBEAT=0 env OMP_NUM_THREADS="${num_threads}" ${cmd} "${exp}/train.log" \
  python -m "${module}" --config "${config}" --output_dir "${exp}" --ngpu "${ngpu}" --resume true \
  "${args[@]}" ${train_args} &
job=$!
python -m espnet_probe.bin.follow_training --label "${label%% *} $(basename "${exp}")" --pid "${job}" \
  "${exp}/train.log" &
follower=$!
status=0
wait "${job}" || status=$?
wait "${follower}" || true
if [ "${status}" -ne 0 ]; then
  echo "$0: ${label} training failed, see ${exp}/train.log" >&2
  tail -n 20 "${exp}/train.log" >&2
  exit 1
fi
if [ "${task}" = asr ]; then
  python -m espnet_probe.bin.experiments trained --exp "${exp}" --train_set "${train_set}" \
    --seconds $(( $(date +%s) - started )) \
    --machine "$(nproc --all) CPU cores, ${ngpu} GPU, ${num_threads} thread(s)"
fi
stamp finish || exit 1
echo "${label} ${exp}: trained in $(( $(date +%s) - started )) s" >&2
