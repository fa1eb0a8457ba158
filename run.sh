#!/usr/bin/env bash
# espnet-probe: what does each layer of an end-to-end ASR encoder hear?
# The staged recipe. With no arguments it runs every stage on the embedded espeak-ng corpus,
# offline, on a CPU. Recipes under egs/ call this script with their own data and configs.
set -euo pipefail

probe_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# General
stage=1
stop_stage=100
nj=2                        # parallel jobs for feature extraction and scoring
seed=0
# Data (stage 1)
local_data_script=local/data.sh   # relative to the recipe dir (the working directory)
local_data_opts=""
train_set=train
valid_set=dev
test_sets=test
train_dir=""                # existing Kaldi data dirs instead of local/data.sh
valid_dir=""
test_dirs=""                # space-separated; their names become the test set names
# Noise (stage 2)
musan_dir=""                # MUSAN-layout dir (noise/ music/ speech/); empty: synthesize noise
augment_config=${probe_root}/conf/augment.yaml
test_snrs="20 10 0"
# Features (stage 3)
fbank_config=${probe_root}/conf/fbank.yaml
# ASR (stages 4-6)
token_type=""               # char | bpe; empty: each ASR config's own token_type (char if unset)
nbpe=100                    # sentencepiece BPE vocabulary size
asr_configs="${probe_root}/conf/asr/vgg_blstm_small.yaml ${probe_root}/conf/asr/blstm_small.yaml"
asr_config=""               # a single config instead of asr_configs (e.g. conformer_small.yaml)
asr_trainings="baseline robust"   # baseline: clean training set; robust: clean + noisy copy
asr_args=""                 # extra ESPnet trainer options, e.g. "--max_epoch 30"
ngpu=0
asr_parallel=2              # ASR models trained at once (each with 1 thread on a CPU)
datadir=data
dumpdir=dump
expdir=exp

help_message=$(cat <<HELP
Usage: $0 [--stage N] [--stop_stage M] [--option value ...]
Stages:
  1  data      Kaldi data dirs: ${local_data_script} ${local_data_opts:-(embedded corpus)}, or
               --train_dir/--valid_dir/--test_dirs to import existing Kaldi data dirs
  2  noise     noisy training copy (<train>_aug) and fixed-SNR test sets (<test>_snr<N>)
  3  features  80 log-mel + deltas + accelerations (ark/scp), clean targets, global CMVN
  4  tokens    token list of the training text (characters, or sentencepiece BPE)
  5  asr_train CTC encoders x {baseline, robust} through ESPnet's trainer
  6  asr_decode greedy CTC decoding of every test condition, WER/CER, Table 1
Options (defaults in brackets):
  --stage [${stage}] --stop_stage [${stop_stage}] --nj [${nj}] --seed [${seed}]
  --local_data_script [${local_data_script}] --local_data_opts ["${local_data_opts}"]
  --train_set [${train_set}] --valid_set [${valid_set}] --test_sets ["${test_sets}"]
  --train_dir --valid_dir --test_dirs   existing Kaldi data dirs (validated, then copied)
  --musan_dir [${musan_dir:-synthetic}] --augment_config [${augment_config}]
  --test_snrs ["${test_snrs}"]
  --fbank_config [${fbank_config}]
  --token_type [${token_type:-from each ASR config}] --nbpe [${nbpe}]
  --asr_configs ["${asr_configs}"]  --asr_config (one config instead)
  --asr_trainings ["${asr_trainings}"] --asr_args ["${asr_args}"] --ngpu [${ngpu}]
  --asr_parallel [${asr_parallel}]
  --datadir [${datadir}] --dumpdir [${dumpdir}] --expdir [${expdir}]
Job backend: cmd.sh (local runner by default; Kaldi queue.pl / slurm.pl on a cluster).
HELP
)

. "${probe_root}/scripts/parse_options.sh"
. "${probe_root}/path.sh"
. "${probe_root}/cmd.sh"

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') ($(basename "$0"):${BASH_LINENO[0]}) $*" >&2; }
run_stage() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }

if [ -n "${test_dirs}" ]; then
  test_sets=""
  for d in ${test_dirs}; do test_sets+="${test_sets:+ }$(basename "$d")"; done
fi
noisy_test_sets=""
for t in ${test_sets}; do for s in ${test_snrs}; do noisy_test_sets+=" ${t}_snr${s}"; done; done
aug_set=${train_set}_aug
robust_set=${train_set}_robust
mkdir -p "${expdir}/log"

if run_stage 1; then
  log "Stage 1: data preparation"
  if [ -n "${train_dir}" ]; then
    [ -n "${valid_dir}" ] && [ -n "${test_dirs}" ] || {
      log "--train_dir needs --valid_dir and --test_dirs too"; exit 1; }
    python -m espnet_probe.bin.import_data_dir --src "${train_dir}" --dst "${datadir}/${train_set}"
    python -m espnet_probe.bin.import_data_dir --src "${valid_dir}" --dst "${datadir}/${valid_set}"
    for d in ${test_dirs}; do
      python -m espnet_probe.bin.import_data_dir --src "$d" --dst "${datadir}/$(basename "$d")"
    done
  else
    # eval: local_data_opts may carry quoted values, e.g. --subsets 'dev-clean test-clean'
    eval "\"${local_data_script}\" --out \"${datadir}\" --seed ${seed} --nj ${nj} ${local_data_opts}"
  fi
  python -m espnet_probe.bin.check_split --data "${datadir}" --train "${train_set}" \
    --valid "${valid_set}" --test ${test_sets}
fi

if run_stage 2; then
  log "Stage 2: noise augmentation and fixed-SNR test sets"
  noise_dir=${musan_dir}
  if [ -z "${noise_dir}" ]; then
    noise_dir=${datadir}/local/noise
    python -m espnet_probe.bin.make_synthetic_noise --out "${noise_dir}" --seed "${seed}"
    if [ -z "$(find "${noise_dir}/speech" -name '*.wav' 2>/dev/null | head -1)" ]; then
      log "No babble speech in ${noise_dir}/speech (only the embedded corpus makes some):"
      log "give --musan_dir with a MUSAN-layout directory"; exit 1
    fi
  fi
  "${probe_root}/local/augment.sh" --musan_dir "${noise_dir}" --train_set "${train_set}" \
    --test_sets "${test_sets}" --snrs "${test_snrs}" --data "${datadir}" \
    --audio_dir "${dumpdir}/audio" --config "${augment_config}" --seed "${seed}" --nj "${nj}" \
    --cmd "${train_cmd}"
fi

if run_stage 3; then
  log "Stage 3: features (log-mel + deltas) for ${train_set} ${aug_set} ${valid_set} ${test_sets}${noisy_test_sets}"
  "${probe_root}/local/make_features.sh" --nj "${nj}" --cmd "${train_cmd}" \
    --config "${fbank_config}" --datadir "${datadir}" --featdir "${dumpdir}/fbank" \
    --stats_sets "${train_set} ${aug_set}" \
    --sets "${train_set} ${valid_set} ${test_sets}" \
    --noisy_sets "${aug_set}:${train_set}$(for t in ${test_sets}; do for s in ${test_snrs}; do printf ' %s_snr%s:%s' "$t" "$s" "$t"; done; done)"
  python -m espnet_probe.bin.make_features --out_dir "${dumpdir}/fbank/${robust_set}" \
    --combine "${dumpdir}/fbank/${train_set}" "${dumpdir}/fbank/${aug_set}"
fi

if [ -n "${asr_config}" ]; then asr_configs=${asr_config}; fi
# Output units belong to a model: the pure BLSTM's last layers run at 12.5 frames/s, too slow
# for LibriSpeech's ~14 characters/s, so its paper-scale config asks for BPE.
config_token_type() {
  [ -n "${token_type}" ] && { echo "${token_type}"; return; }
  python -c 'import sys, yaml; print((yaml.safe_load(open(sys.argv[1])) or {}).get("token_type") or "char")' "$1"
}
token_dir() { if [ "$1" = bpe ]; then echo "${dumpdir}/tokens/bpe${nbpe}"; else echo "${dumpdir}/tokens/$1"; fi; }
asr_tag() { echo "asr_$(basename "$1" .yaml)_$2"; }   # config, training
asr_train_set() { if [ "$1" = robust ]; then echo "${robust_set}"; else echo "${train_set}"; fi; }

if run_stage 4; then
  types=$(for config in ${asr_configs}; do config_token_type "${config}"; done | sort -u | xargs)
  log "Stage 4: token lists (${types}) from ${train_set}"
  for type in ${types}; do
    python -m espnet_probe.bin.make_tokens --text "${datadir}/${train_set}/text" \
      --token_type "${type}" --nbpe "${nbpe}" --out_dir "$(token_dir "${type}")"
  done
fi

if run_stage 5; then
  log "Stage 5: ASR training: $(for c in ${asr_configs}; do basename "$c" .yaml; done | xargs) x {${asr_trainings}}"
  pids=()
  for config in ${asr_configs}; do
    type=$(config_token_type "${config}")
    bpemodel=""
    [ "${type}" = bpe ] && bpemodel=$(token_dir bpe)/bpe.model
    for training in ${asr_trainings}; do
      while [ "$(jobs -rp | wc -l)" -ge "${asr_parallel}" ]; do sleep 2; done
      "${probe_root}/local/asr_train.sh" --config "${config}" \
        --exp "${expdir}/$(asr_tag "${config}" "${training}")" --model "$(basename "${config}" .yaml)" \
        --training "${training}" --train_set "$(asr_train_set "${training}")" \
        --valid_set "${valid_set}" --featdir "${dumpdir}/fbank" \
        --token_list "$(token_dir "${type}")/tokens.txt" --token_type "${type}" --bpemodel "${bpemodel}" --ngpu "${ngpu}" \
        --asr_args "${asr_args}" --cmd "${cuda_cmd}" &
      pids+=($!)
    done
  done
  failed=0
  for pid in "${pids[@]}"; do wait "${pid}" || failed=$((failed + 1)); done
  [ "${failed}" -eq 0 ] || { log "${failed} ASR training(s) failed"; exit 1; }
fi

if run_stage 6; then
  log "Stage 6: greedy CTC decoding and scoring of ${test_sets}${noisy_test_sets}"
  exps=()
  for config in ${asr_configs}; do
    for training in ${asr_trainings}; do
      exp=${expdir}/$(asr_tag "${config}" "${training}")
      exps+=("${exp}")
      for t in ${test_sets} ${noisy_test_sets}; do
        ${decode_cmd} "${exp}/decode_${t}/decode.log" \
          python -m espnet_probe.bin.asr_decode --asr_exp "${exp}" \
            --feats_dir "${dumpdir}/fbank/${t}" --out "${exp}/decode_${t}"
        grep -h "asr_decode" "${exp}/decode_${t}/decode.log" >&2 || true
      done
    done
  done
  python -m espnet_probe.bin.asr_results --exps "${exps[@]}" --out "${expdir}/asr_results"
fi

log "Finished stages ${stage}..${stop_stage}"
