#!/usr/bin/env bash
# The paper's configuration: LibriSpeech (train-clean-100 / dev-clean / test-clean) with MUSAN.
#   ./run.sh --librispeech_dir /data/LibriSpeech --musan_dir /data/musan
# Without --librispeech_dir the subsets are downloaded into downloads/.
# A tree with a single subset (e.g. mini LibriSpeech's train-clean-5) is split by speaker:
#   ./run.sh --librispeech_dir ../../../shared/data/LibriSpeech --musan_dir ../../../shared/data/musan_mini \
#            --subsets train-clean-5 --split_by_speaker train=14,dev=2,test=4
# --max_utts_per_spk N keeps a seeded sample of N utterances per speaker (quick runs).
# Statistics: every test utterance is vocoded and scored (as the paper scores all of
# test-clean) and the speaker trials are as many as the test speakers allow (every target pair,
# as many non-target pairs); give --vocode_max_utts N / --n_trials N to cut them.
# Every other option is passed to the shared recipe (../../run.sh --help lists them).
set -euo pipefail
cd "$(dirname "$0")"

librispeech_dir=""
musan_dir=""
subsets="train-clean-100 dev-clean test-clean"
split_by_speaker=""
max_utts_per_spk=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --librispeech_dir) librispeech_dir=$2; shift 2 ;;
    --subsets) subsets=$2; shift 2 ;;
    --split_by_speaker) split_by_speaker=$2; shift 2 ;;
    --musan_dir) musan_dir=$2; shift 2 ;;
    --max_utts_per_spk) max_utts_per_spk=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ -n "${musan_dir}" ] || { echo "$0: --musan_dir is required (MUSAN or a MUSAN-layout dir)" >&2; exit 1; }

if [ -n "${split_by_speaker}" ]; then
  sets=(--train_set train --valid_set dev --test_sets test)
else
  set -- ${subsets}
  sets=(--train_set "${1//-/_}" --valid_set "${2//-/_}" --test_sets "${3//-/_}")
fi

data_opts="--subsets '${subsets}' --train_set ${sets[1]} --valid_set ${sets[3]} --test_set ${sets[5]}"
[ -n "${librispeech_dir}" ] && data_opts+=" --librispeech_dir $(realpath "${librispeech_dir}")"
[ -n "${split_by_speaker}" ] && data_opts+=" --split_by_speaker ${split_by_speaker}"
[ -n "${max_utts_per_spk}" ] && data_opts+=" --max_utts_per_spk ${max_utts_per_spk}"

# This recipe's own configs (the embedded default's are sized for its 15-minute budget), every
# test utterance, every trial and the paper's SNRs; the robust model hears each utterance clean or
# noisy in turn (the shared default: as many updates as the baseline, which halves its time on 2
# cores against a pass over clean + noisy). The options given on the command line come last and win.
exec ../../run.sh --local_data_script local/data.sh --local_data_opts "${data_opts}" \
  --musan_dir "$(realpath "${musan_dir}")" "${sets[@]}" --vocode_max_utts 0 --n_trials 1000000 \
  --asr_configs "$(pwd)/conf/asr/vgg_blstm_c64.yaml" --probe_config "$(pwd)/conf/probe/probe_small.yaml" \
  --speaker_config "$(pwd)/conf/speaker/resnet_small.yaml" \
  --test_snrs "20 10 0" "${args[@]}"
