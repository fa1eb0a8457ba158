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
musan_dir=""                # MUSAN-layout dir (noise/ music/ speech/); empty: synthetic noise and
                            # music, babble of the training set's own speakers (or the embedded
                            # corpus's voices), never an utterance's own speaker
augment_config=${probe_root}/conf/augment.yaml
test_snrs="0"                # the paper: "20 10 0" (every SNR costs stages 6-11 one more condition)
# Features (stage 3)
fbank_config=${probe_root}/conf/fbank.yaml
# ASR (stages 4-6)
token_type=""               # char | bpe; empty: each ASR config's own token_type (char if unset)
nbpe=100                    # sentencepiece BPE vocabulary size
asr_configs="${probe_root}/conf/asr/vgg_blstm_small.yaml"   # the paper's 2 x 2: add
                            # ${probe_root}/conf/asr/blstm_small.yaml (see README, "The paper's design")
asr_config=""               # a single config instead of asr_configs (e.g. conformer_small.yaml)
asr_trainings="baseline robust"   # baseline: clean training set; robust: clean + noisy copy
robust_epoch=clean          # clean: a robust epoch makes as many updates as a baseline one (each
                            # utterance heard clean or noisy in turn, as with on-the-fly noise);
                            # all: a pass over clean + noisy (twice the updates and the time)
robust_init=scratch         # scratch; baseline: each robust model starts from its trained baseline
                            # (trained after it, no growth stages) and fine-tunes on clean + noisy
asr_args=""                 # extra ESPnet trainer options, e.g. "--max_epoch 30"
ngpu=0
gpu_inference=false         # true: decoding, probe decoding, speaker-ID probes and scoring run as
                            # ${cuda_cmd} jobs with --device cuda (training follows --ngpu)
asr_parallel=2              # ASR models trained at once (1 thread each on a CPU)
probe_parallel=3            # probe experiments trained at once: on 2 cores the default's three
                            # share them, rather than the third waiting for a free one
asr_exps=""                 # ESPnet2 ASR models trained elsewhere, probed beside ours: egs2 exp
                            # dirs or packed models (espnet2.bin.pack asr), space-separated
asr_recipe_dir=""           # where their config.yaml's relative paths start (default: each exp
                            # dir's grandparent, egs2/<corpus>/asr1)
asr_model_file=""           # their checkpoint (default: valid.acc.ave.pth, valid.acc.best.pth,
                            # valid.loss.ave.pth, valid.loss.best.pth, the first that exists)
beam_size=10                # joint CTC/attention beam for hybrid brought models (stage 6)
maxlenratio=0.0             # their hypotheses' length limit in tokens per encoder frame (ESPnet's
                            # maxlenratio: 0 = one, with ESPnet's end detection)
trust_checkpoints=false     # true: unpickle brought checkpoints in full, which RUNS ANY CODE they
                            # carry; false: tensors and plain data only, others refused (one line)
# Probes (stages 7-9)
probe_config=${probe_root}/conf/probe/probe_small.yaml
probe_train_set=""          # default: <train>_robust, clean + noisy, so every probe has heard
                            # the conditions it decodes (the baseline ASR models included)
probe_controls=true         # also probe a randomly initialised encoder of each architecture
control_conditions=clean    # clean | all: conditions the random-encoder controls are decoded,
                            # vocoded and scored in (clean: a quarter of stages 8-11's work less)
probe_args=""               # extra ESPnet options for probe training, e.g. "--max_epoch 10"
vocoder_config=${probe_root}/conf/vocoder.yaml
vocode_max_utts=48          # utterances vocoded per test condition (speakers in turn); 0 = all. 48 =
                            # 12 of each test voice: 264 + 264 trials (24 gave 60 + 60, too few for
                            # a stable EER-depth trend; BENCHMARKS.md section 1)
# Speaker side and scoring (stages 10-12)
speaker_config=${probe_root}/conf/speaker/resnet_small.yaml   # ThinResNet-34 + GhostVLAD
speaker_train_set=""        # default: <train>; its speakers train the ThinResNet encoder
speaker_id_probe=true       # linear speaker-ID probe on every layer's hidden states
n_trials=1000               # target (and non-target) trials per test set, capped by the data
n_boot=1000                 # bootstrap replicates: EER / minDCF intervals and the paired tests
score_nj=1                  # processes inside each scoring job (--nj of them run at once); on a
                            # cluster node with C cores: --nj <experiments> --score_nj C
# Demo page and listening test (stages 13-14)
demo_utts=3                 # sample utterances per demo table
listening_name=default      # the test lives in ${expdir}/listening/<name>
listening_exps=""           # probe experiment dirs to test; default, as in the paper's Fig. 2b:
                            # the robust model of the first ASR config (else its first training)
listening_sets=""           # default: the first test set (clean)
listening_layers=""         # default: every vocoded layer
listening_per_layer=5       # triplets per experiment x set x layer (every rater hears all; the
                            # paper: 10 x 6 layers; here 5 x 12 = 60 trials, ~15 min per rater)
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
  5  asr_train CTC encoders x {baseline, robust} through ESPnet's trainer (--asr_exps: models
               trained elsewhere join here, as exp/asr_<name>_brought; stages 6-14 probe them too)
  6  asr_decode every test condition, WER/CER, Table 1 (greedy CTC; hybrid brought models:
               ESPnet's joint CTC/attention beam search)
  7  probe_train frame-wise Highway probes on every layer of each ASR model (+ random encoders)
  8  probe_decode predicted log-mel per layer and condition (+ the oracle: the input's own mel)
  9  vocode    Griffin-Lim audio per layer and condition
  10 speaker   ThinResNet-34 + GhostVLAD speaker encoder (ESPnet trainer) and linear speaker-ID
               probes on every layer's hidden states
  11 score     per layer and condition: GE2E and ThinResNet EER/minDCF, STOI/ESTOI/PESQ, mel L1/MCD
  12 report    ${expdir}/report: scores.csv, RESULTS.md (Tables 1-2 and more), PNG figures
  13 demo      ${expdir}/demo/index.html (layers x utterances, audio + mel; opens from disk) and
               the listening test's triplets (${expdir}/listening/<name>/listening.db); then serve
               it to raters: python -m espnet_probe.bin.listening_test serve --db <that db>
  14 listening human error rate per layer from the raters' answers, into the report (Fig. 2b)
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
  --asr_trainings ["${asr_trainings}"] --robust_epoch [${robust_epoch}] --robust_init [${robust_init}] --asr_args ["${asr_args}"] --ngpu [${ngpu}]
  --gpu_inference [${gpu_inference}] --asr_parallel [${asr_parallel}] --probe_parallel [${probe_parallel}]
  --asr_exps ["${asr_exps}"] --asr_recipe_dir [${asr_recipe_dir:-<exp dir>/../..}]
  --asr_model_file [${asr_model_file:-first of valid.acc.ave.pth ...}] --beam_size [${beam_size}] --maxlenratio [${maxlenratio}]
  --trust_checkpoints [${trust_checkpoints}]  (true runs code a checkpoint carries: trusted files only)
  --probe_config [${probe_config}] --probe_train_set [${probe_train_set:-<train>_robust}]
  --probe_controls [${probe_controls}] --control_conditions [${control_conditions}] --probe_args ["${probe_args}"]
  --vocoder_config [${vocoder_config}] --vocode_max_utts [${vocode_max_utts}]
  --speaker_config [${speaker_config}] --speaker_train_set [${speaker_train_set:-<train>}]
  --speaker_id_probe [${speaker_id_probe}] --n_trials [${n_trials}] --n_boot [${n_boot}] --score_nj [${score_nj}]
  --demo_utts [${demo_utts}] --listening_name [${listening_name}] --listening_exps ["${listening_exps}"]
  --listening_sets ["${listening_sets}"] --listening_layers ["${listening_layers}"]
  --listening_per_layer [${listening_per_layer}]
  --datadir [${datadir}] --dumpdir [${dumpdir}] --expdir [${expdir}]
Job backend: cmd.sh (local runner by default; Kaldi queue.pl / slurm.pl on a cluster).
HELP
)

. "${probe_root}/scripts/parse_options.sh"
. "${probe_root}/path.sh"
. "${probe_root}/cmd.sh"
case "${robust_init}" in scratch|baseline) ;;
  *) echo "$0: --robust_init must be scratch or baseline, got '${robust_init}'" >&2; exit 1 ;;
esac
case "${robust_epoch}" in clean|all) ;;
  *) echo "$0: --robust_epoch must be clean or all, got '${robust_epoch}'" >&2; exit 1 ;;
esac
case "${trust_checkpoints}" in  # read by every loader (espnet_probe.utils.checkpoint), in every job
  true|false) export PROBE_TRUST_CHECKPOINTS=${trust_checkpoints} ;;
  *) echo "$0: --trust_checkpoints must be true or false, got '${trust_checkpoints}'" >&2; exit 1 ;;
esac
case "${gpu_inference}" in  # as ESPnet's --gpu_inference: the GPU queue and the device together
  true) infer_cmd=${cuda_cmd}; infer_device=cuda ;;
  false) infer_cmd=${decode_cmd}; infer_device=cpu ;;
  *) echo "$0: --gpu_inference must be true or false, got '${gpu_inference}'" >&2; exit 1 ;;
esac

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') ($(basename "$0"):${BASH_LINENO[0]}) $*" >&2; }
# run_stage N: is stage N selected? It also closes the previous stage with its wall time.
stage_running=""; stage_started=0; run_started=$(date +%s)
end_stage() {
  if [ -n "${stage_running}" ]; then log "Stage ${stage_running} done in $(( $(date +%s) - stage_started )) s"; fi
  stage_running=""
}
run_stage() {
  [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ] || return 1
  end_stage; stage_running=$1; stage_started=$(date +%s)
}
# The one way a stage runs jobs side by side (each through the job backend of cmd.sh):
#   start_job LIMIT CMD...  start CMD in the background once fewer than LIMIT jobs run (0: now)
#   wait_jobs WHAT [LOGS]   wait for all started jobs; if any failed, log how many (and where
#                           their logs are) and return 1
started_jobs=()
start_job() {
  local limit=$1; shift
  while [ "${limit}" -gt 0 ] && [ "$(jobs -rp | wc -l)" -ge "${limit}" ]; do sleep 1; done
  "$@" &
  started_jobs+=($!)
}
wait_jobs() {
  local pid failed=0
  for pid in "${started_jobs[@]}"; do wait "${pid}" || failed=$((failed + 1)); done
  started_jobs=()
  [ "${failed}" -eq 0 ] || { log "${failed} $1 failed${2:+, see $2}"; return 1; }
}

if [ -n "${test_dirs}" ]; then  # their basenames, checked against every other set's name
  test_sets=$(python -m espnet_probe.bin.import_data_dir --test_set_names --test_dirs "${test_dirs}" \
    --train_set "${train_set}" --valid_set "${valid_set}" --test_snrs "${test_snrs}") || exit 1
fi
noisy_test_sets=""
for t in ${test_sets}; do for s in ${test_snrs}; do noisy_test_sets+=" ${t}_snr${s}"; done; done
aug_set=${train_set}_aug
noise_dir=${musan_dir:-${datadir}/local/noise}   # what stage 2 mixes from
robust_set=${train_set}_robust
mkdir -p "${expdir}/log"

if run_stage 1; then
  log "Stage 1: data preparation"
  if [ -n "${train_dir}" ]; then
    [ -n "${valid_dir}" ] && [ -n "${test_dirs}" ] || {
      log "--train_dir needs --valid_dir and --test_dirs too"; exit 1; }
    python -m espnet_probe.bin.import_data_dir --data "${datadir}" --train_dir "${train_dir}" \
      --valid_dir "${valid_dir}" --test_dirs "${test_dirs}" --train_set "${train_set}" \
      --valid_set "${valid_set}" --test_snrs "${test_snrs}" --nj "${nj}"
  else
    # eval: local_data_opts may carry quoted values, e.g. --subsets 'dev-clean test-clean'
    eval "\"${local_data_script}\" --out \"${datadir}\" --seed ${seed} --nj ${nj} ${local_data_opts}"
  fi
  python -m espnet_probe.bin.check_split --data "${datadir}" --train "${train_set}" \
    --valid "${valid_set}" --test ${test_sets}
fi

if run_stage 2; then
  log "Stage 2: noise augmentation and fixed-SNR test sets"
  if [ -z "${musan_dir}" ]; then
    # babble: the embedded corpus's own voices, else the training set's speakers
    python -m espnet_probe.bin.make_synthetic_noise --out "${noise_dir}" --seed "${seed}" \
      --babble_from "${datadir}/${train_set}"
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
  if [ -n "${asr_exps}" ]; then  # brought models may take raw audio through their own frontend
    python -m espnet_probe.bin.dump_waves --data_root "${datadir}" --dump_root "${dumpdir}/fbank" \
      --fbank_config "${fbank_config}" --sets ${train_set} ${aug_set} ${valid_set} ${test_sets}${noisy_test_sets}
  fi
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
asr_train_set() { if [ "$1" = robust ]; then echo "${robust_set}"; else echo "${train_set}"; fi; }
asr_checkpoint() {  # ESPnet's order, or a brought model's record
  python -m espnet_probe.bin.bring_asr --checkpoint_of "$1" || { log "no ASR model in $1 (run stage 5)"; exit 1; }
}

if run_stage 4; then
  types=$(for config in ${asr_configs}; do config_token_type "${config}"; done | sort -u | xargs)
  log "Stage 4: token lists (${types}) from ${train_set}"
  for type in ${types}; do
    python -m espnet_probe.bin.make_tokens --text "${datadir}/${train_set}/text" \
      --token_type "${type}" --nbpe "${nbpe}" --out_dir "$(token_dir "${type}")"
  done
fi

# Brought models (--asr_exps) become experiments like ours: exp/asr_<name>_brought
brought_exps=()
if [ -n "${asr_exps}" ] && [ "${stop_stage}" -ge 5 ] && [ "${stage}" -le 14 ]; then
  # shellcheck disable=SC2086
  mapfile -t brought_exps < <(python -m espnet_probe.bin.bring_asr --exp_root "${expdir}" \
    --asr_exps ${asr_exps} ${asr_recipe_dir:+--asr_recipe_dir "${asr_recipe_dir}"} \
    ${asr_model_file:+--asr_model_file "${asr_model_file}"} || echo FAILED)
  [ "${brought_exps[*]}" != FAILED ] && [ "${brought_exps[-1]}" != FAILED ] || exit 1
fi
# Every output of the run as a record (espnet_probe/experiments.py): the stages take the dirs
# to make from the plan and ask each dir's record what it is; no output dir is named here.
exps_into() {  # exps_into ARRAY COMMAND [OPTIONS]: bin.experiments COMMAND's lines, one per element
  local out; out=$(python -m espnet_probe.bin.experiments "$2" --expdir "${expdir}" "${@:3}") || exit 1
  mapfile -t "$1" < <([ -z "${out}" ] || printf '%s\n' "${out}")
}
exp_get() { python -m espnet_probe.bin.experiments get "$1" "$2"; }  # exp_get DIR FIELD
planned() { python -m espnet_probe.bin.experiments list --expdir "${expdir}" --kind "$1"; }
asr_exp_dirs=(); probe_exps=(); sid_exps=()
oracle_exp=""; original_exp=""; speaker_exp=""; trials_dir=""; report_dir=""; demo_dir=""; listening_dir=""
if [ "${stop_stage}" -ge 5 ] && [ "${stage}" -le 14 ]; then
  # shellcheck disable=SC2086
  python -m espnet_probe.bin.experiments plan --expdir "${expdir}" --asr_configs ${asr_configs} \
    --asr_trainings ${asr_trainings} --brought "${brought_exps[@]}" --controls "${probe_controls}" \
    --test_sets ${test_sets} --noisy_test_sets ${noisy_test_sets} \
    --control_conditions "${control_conditions}" --robust_init "${robust_init}" \
    --speaker_config "${speaker_config}" --listening_name "${listening_name}" || exit 1
  exps_into asr_exp_dirs list --kind asr
  exps_into probe_exps list --kind probe
  exps_into sid_exps list --kind speaker_id
  oracle_exp=$(planned oracle); original_exp=$(planned original); speaker_exp=$(planned speaker)
  trials_dir=$(planned trials); report_dir=$(planned report); demo_dir=$(planned demo)
  listening_dir=$(planned listening)
fi

if run_stage 5; then
  log "Stage 5: ASR training: $(for c in ${asr_configs}; do basename "$c" .yaml; done | xargs) x {${asr_trainings}}"
  train_asr() {  # train_asr EXP: one training, as a job
    local config training init_from type bpemodel="" epoch_args="" init=""
    config=$(exp_get "$1" config); training=$(exp_get "$1" training); init_from=$(exp_get "$1" init_from)
    type=$(config_token_type "${config}")
    [ "${type}" = bpe ] && bpemodel=$(token_dir bpe)/bpe.model
    if [ "${training}" = robust ] && [ "${robust_epoch}" = clean ]; then
      # shellcheck disable=SC2086
      epoch_args="--num_iters_per_epoch $(python -m espnet_probe.bin.count_batches --config "${config}" \
        --shape_file "${dumpdir}/fbank/${train_set}/feats_shape" ${asr_args})"
    fi
    if [ -n "${init_from}" ]; then init=$(asr_checkpoint "${init_from}") || exit 1; fi
    start_job "${asr_parallel}" "${probe_root}/local/train.sh" --task asr --config "${config}" --exp "$1" \
      --train_set "$(asr_train_set "${training}")" \
      --valid_set "${valid_set}" --featdir "${dumpdir}/fbank" \
      --token_list "$(token_dir "${type}")/tokens.txt" --token_type "${type}" --bpemodel "${bpemodel}" --ngpu "${ngpu}" \
      --init_from "${init}" --train_args "${epoch_args} ${asr_args}" --cmd "${cuda_cmd}"
  }
  # in rounds (experiments.training_rounds): from scratch, robust trainings leading; then the
  # models that start from one of those (--robust_init baseline)
  exps_into asr_rounds trainings
  for round in "${asr_rounds[@]}"; do
    for exp in ${round}; do train_asr "${exp}"; done
    wait_jobs "ASR training(s)" || exit 1
  done
fi

if run_stage 6; then
  log "Stage 6: ASR decoding and scoring of ${test_sets}${noisy_test_sets}"
  exps=()
  for exp in "${asr_exp_dirs[@]}"; do
      exps+=("${exp}")
      # one job per model for all conditions: the model and ESPnet (~10 s) load once
      start_job "${nj}" ${infer_cmd} "${exp}/log/decode.log" \
        python -m espnet_probe.bin.asr_decode --asr_exp "${exp}" --device "${infer_device}" \
          --beam_size "${beam_size}" --maxlenratio "${maxlenratio}" \
          --feats_dir $(for t in ${test_sets} ${noisy_test_sets}; do echo "${dumpdir}/fbank/${t}"; done) \
          --out $(for t in ${test_sets} ${noisy_test_sets}; do echo "${exp}/decode_${t}"; done)
  done
  decoded=true
  wait_jobs "decoding job(s)" || decoded=false
  for exp in "${exps[@]}"; do
    if [ "${decoded}" = false ] && grep -q "^asr_decode: error" "${exp}/log/decode.log"; then
      grep -h "^asr_decode: error" "${exp}/log/decode.log" >&2  # not an older result.json
      log "decoding failed: see ${exp}/log/decode.log"; exit 1
    fi
    grep -h "^asr_decode " "${exp}/log/decode.log" >&2 || true
    for t in ${test_sets} ${noisy_test_sets}; do
      [ -s "${exp}/decode_${t}/result.json" ] || {
        grep -h "^asr_decode: error" "${exp}/log/decode.log" >&2 || true
        log "decoding of ${t} failed: see ${exp}/log/decode.log"; exit 1; }
    done
  done
  python -m espnet_probe.bin.asr_results --exps "${exps[@]}" --out "${expdir}/asr_results"
fi

probe_train_set=${probe_train_set:-${robust_set}}

if run_stage 7; then
  log "Stage 7: probe training (${#probe_exps[@]} experiments) on ${probe_train_set}"
  for pexp in "${probe_exps[@]}"; do
    aexp=$(exp_get "${pexp}" asr_exp); init=$(exp_get "${pexp}" init)
    start_job "${probe_parallel}" "${probe_root}/local/train.sh" --task probe --config "${probe_config}" --exp "${pexp}" \
      --asr_config "${aexp}/config.yaml" --asr_model "$(asr_checkpoint "${aexp}")" --asr_init "${init}" \
      --train_set "${probe_train_set}" --valid_set "${valid_set}" --featdir "${dumpdir}/fbank" \
      --ngpu "${ngpu}" --train_args "${probe_args}" --cmd "${cuda_cmd}"
  done
  wait_jobs "probe training(s)" || exit 1
fi

if run_stage 8; then
  log "Stage 8: probe decoding of ${test_sets}${noisy_test_sets} (controls: ${control_conditions})"
  for pexp in "${probe_exps[@]}"; do
    sets=$(exp_get "${pexp}" sets)
    start_job "${nj}" ${infer_cmd} "${pexp}/log/probe_decode.log" \
      python -m espnet_probe.bin.probe_decode --probe_exp "${pexp}" --device "${infer_device}" \
        --feats_dir $(for t in ${sets}; do echo "${dumpdir}/fbank/${t}"; done)
  done
  sets=$(exp_get "${oracle_exp}" sets)
  start_job 0 ${decode_cmd} "${oracle_exp}/log/probe_decode.log" \
    python -m espnet_probe.bin.probe_decode --oracle --out_root "${oracle_exp}" \
      --feats_dir $(for t in ${sets}; do echo "${dumpdir}/fbank/${t}"; done)
  wait_jobs "probe decoding job(s)" "${expdir}/probe_*/log" || exit 1
  python -m espnet_probe.bin.probe_results --out "${expdir}/probe_results" --exps "${probe_exps[@]}"
fi

if run_stage 9; then
  log "Stage 9: vocoding every layer (${vocode_max_utts:-all} utts per condition)"
  for pexp in "${probe_exps[@]}" "${oracle_exp}"; do
    sets=$(exp_get "${pexp}" sets)
    start_job "${nj}" ${train_cmd} "${pexp}/log/vocode.log" \
      python -m espnet_probe.bin.vocode_layers --data "${datadir}" --max_utts "${vocode_max_utts}" \
        --fbank_config "${fbank_config}" --config "${vocoder_config}" \
        --decode_dirs $(for t in ${sets}; do echo "${pexp}/decode_${t}"; done)
  done
  wait_jobs "vocoding job(s)" "${expdir}/probe_*/log/vocode.log" || exit 1
  log "Stage 9: $(find "${expdir}" -path '*/decode_*/*/wav/*.wav' | wc -l) wavs under ${expdir}/probe_*"
fi

speaker_train_set=${speaker_train_set:-${train_set}}

if run_stage 10; then
  log "Stage 10: speaker encoder (${speaker_exp}) on ${speaker_train_set}; speaker-ID probes"
  config=$(exp_get "${speaker_exp}" config)
  start_job 0 "${probe_root}/local/train.sh" --task speaker --config "${config}" --exp "${speaker_exp}" \
    --train_dir "${datadir}/${speaker_train_set}" --split_seed "${seed}" --ngpu "${ngpu}" --cmd "${cuda_cmd}"
  if [ "${speaker_id_probe}" = true ]; then
    for out in "${sid_exps[@]}"; do
      aexp=$(exp_get "${out}" asr_exp); init=$(exp_get "${out}" init)
      start_job "${nj}" ${infer_cmd} "${out}/speaker_id.log" \
        python -m espnet_probe.bin.speaker_id_probe --asr_exp "${aexp}" --asr_init "${init}" \
          --device "${infer_device}" \
          --feats_dir "${dumpdir}/fbank/${speaker_train_set}" --out "${out}" --seed "${seed}"
      done
  fi
  wait_jobs "speaker job(s)" "${speaker_exp}/train.log and ${expdir}/asr_*/speaker_id*/speaker_id.log" || exit 1
fi

if run_stage 11; then
  log "Stage 11: scoring every layer and condition (${n_trials} trials per class, ${n_boot} bootstraps)"
  sets=$(exp_get "${trials_dir}" sets)
  for t in ${sets}; do
    python -m espnet_probe.bin.make_trials --data_dir "${datadir}/${t}" \
      --utt_list "${oracle_exp}/decode_${t}/vocoded_utts" --n_per_class "${n_trials}" \
      --allow_fewer --seed "${seed}" --out "${trials_dir}/${t}/trials"
  done
  speaker_opt=()
  if python -m espnet_probe.bin.stamp is_done "${speaker_exp}"; then speaker_opt=(--speaker_model "${speaker_exp}"); fi
  common=(--data "${datadir}" --feats_root "${dumpdir}/fbank" --trials_dir "${trials_dir}"
          --n_boot "${n_boot}" --seed "${seed}" --nj "${score_nj}" --device "${infer_device}"
          "${speaker_opt[@]}")
  for pexp in "${probe_exps[@]}"; do
    model=$(exp_get "${pexp}" model); training=$(exp_get "${pexp}" training)
    start_job "${nj}" ${infer_cmd} "${pexp}/log/score.log" python -m espnet_probe.bin.score_layers \
      --exp "${pexp}" --model "${model}" --training "${training}" "${common[@]}"
  done
  model=$(exp_get "${oracle_exp}" model)
  start_job 0 ${infer_cmd} "${oracle_exp}/log/score.log" python -m espnet_probe.bin.score_layers \
    --exp "${oracle_exp}" --model "${model}" "${common[@]}"
  model=$(exp_get "${original_exp}" model); sets=$(exp_get "${original_exp}" sets)
  # shellcheck disable=SC2086
  start_job 0 ${infer_cmd} "${original_exp}/log/score.log" python -m espnet_probe.bin.score_layers \
    --original --exp "${original_exp}" --model "${model}" --sets ${sets} "${common[@]}"
  wait_jobs "scoring job(s)" "${expdir}/*/log/score.log" || exit 1
  for e in "${probe_exps[@]}" "${oracle_exp}" "${original_exp}"; do
    grep -h "^score_layers" "${e}/log/score.log" >&2 || true
  done
fi

make_report() {
  local out pexp model training first_test lowest_snr
  sid_args=()
  if [ "${speaker_id_probe}" = true ]; then
    for out in "${sid_exps[@]}"; do
      model=$(exp_get "${out}" model); training=$(exp_get "${out}" training)
      sid_args+=("${model}:${training}:${out}/results.csv")
    done
  fi
  mel_args=()
  first_test=${test_sets%% *}
  lowest_snr=$(for s in ${test_snrs}; do echo "$s"; done | sort -n | head -1)
  exps_into trained_probes list --kind probe --init trained
  for pexp in "${trained_probes[@]}"; do  # the trained models' probes (the figure's rows)
    model=$(exp_get "${pexp}" model); training=$(exp_get "${pexp}" training)
    mel_args+=("${model}:${training}:clean:${pexp}/decode_${first_test}")
    [ -n "${lowest_snr}" ] && mel_args+=("${model}:${training}:snr${lowest_snr}:${pexp}/decode_${first_test}_snr${lowest_snr}")
  done
  asr_opt=()
  [ -f "${expdir}/asr_results.csv" ] && asr_opt=(--asr_results "${expdir}/asr_results.csv")
  noise_opt=(); if [ -d "${noise_dir}" ]; then noise_opt=(--noise_dir "${noise_dir}"); fi
  python -m espnet_probe.bin.make_report --out "${report_dir}" \
    --scores $(for e in "${probe_exps[@]}" "${oracle_exp}" "${original_exp}"; do echo "$e/scores.csv"; done) \
    "${asr_opt[@]}" --speaker_id "${sid_args[@]}" --mel_figure "${mel_args[@]}" \
    --oracle_root "${oracle_exp}" --trials_dir "${trials_dir}" --n_boot "${n_boot}" --seed "${seed}" \
    "${noise_opt[@]}" \
    --header "Test sets: ${test_sets}; conditions: clean and ${test_snrs} dB SNR; seed ${seed}."
}

if run_stage 12; then
  log "Stage 12: report in ${report_dir}"
  make_report
fi

if run_stage 13; then
  log "Stage 13: demo page and listening test"
  python -m espnet_probe.bin.make_demo --exp_root "${expdir}" --data "${datadir}" \
    --out "${demo_dir}" --utts_per_table "${demo_utts}" --seed "${seed}" --fbank_config "${fbank_config}"
  if [ -f "${listening_dir}/listening.db" ]; then
    log "keeping ${listening_dir}/listening.db and its answers (delete it to draw a new test)"
  else
    exps=${listening_exps}
    if [ -z "${exps}" ]; then  # the first model's robust probe, else its first trained one
      exps=$(python -m espnet_probe.bin.experiments listening_default --expdir "${expdir}")
    fi
    # shellcheck disable=SC2086
    python -m espnet_probe.bin.listening_test make --exp_root "${expdir}" --data "${datadir}" \
      --out "${listening_dir}" --exps ${exps} --sets ${listening_sets:-${test_sets%% *}} \
      ${listening_layers:+--layers ${listening_layers}} --per_layer "${listening_per_layer}" --seed "${seed}"
  fi
  log "demo: ${demo_dir}/index.html; listening test: python -m espnet_probe.bin.listening_test serve --db ${listening_dir}/listening.db  (then ./run.sh --stage 14)"
fi

if run_stage 14; then
  log "Stage 14: human error rate per layer from ${listening_dir}/listening.db"
  python -m espnet_probe.bin.listening_test score --db "${listening_dir}/listening.db" --out_dir "${listening_dir}"
  make_report
fi

end_stage
log "Finished stages ${stage}..${stop_stage} in $(( $(date +%s) - run_started )) s"
if [ "${stop_stage}" -ge 12 ] && [ -f "${report_dir}/RESULTS.md" ]; then
  log "Report: ${report_dir}/RESULTS.md (tables, findings, paired tests; scores.csv,"
  log "  comparisons.csv); figures: ${report_dir}/*.png"
  if [ -f "${demo_dir}/index.html" ]; then log "Demo page: ${demo_dir}/index.html"; fi
fi
