#!/usr/bin/env bash
# The paper's setup: LibriSpeech (train-clean-100 / dev-clean / test-clean) with MUSAN noise, as
# a list of options over the shared recipe (../../run.sh --help lists every option). Data: give
# local/data.sh's options in --local_data_opts (local/data.sh --help):
#   ./run.sh --musan_dir /data/musan --local_data_opts "--librispeech_dir /data/LibriSpeech"
# Without --librispeech_dir the three subsets are downloaded into downloads/. One subset is split
# by speaker (test speakers never seen in training), e.g. mini LibriSpeech as in ../../../shared:
#   ./run.sh --musan_dir ../../../shared/data/musan_mini --local_data_opts \
#     "--librispeech_dir ../../../shared/data/LibriSpeech --subsets train-clean-5 --split_by_speaker 14,2,4"
# Either way the sets are data/{train,dev,test}.
# Whisper tiny.en instead of the trained models (docs/results/whisper_tiny_en, the run of record):
#   ./run.sh --asr_configs "" --asr_exps whisper:tiny.en --musan_dir ../../../shared/data/musan_mini \
#     --local_data_opts "<as above>" --test_snrs 0
# This recipe's own configs (the embedded default's are sized for its 15-minute budget); every
# test utterance vocoded and scored, as the paper scores all of test-clean, and every trial the
# test speakers allow (--vocode_max_utts N / --n_trials N cut them); the paper's SNRs. Options
# given on the command line come last and win. The robust model is fine-tuned from the baseline:
# from scratch on clean + noisy the 64-channel VGG stays on the CTC blank plateau (its config).
set -euo pipefail
cd "$(dirname "$0")"
exec ../../run.sh --local_data_script local/data.sh --train_set train --valid_set dev --test_sets test \
  --asr_configs "$(pwd)/conf/asr/vgg_blstm_c64_3layer.yaml" --probe_config "$(pwd)/conf/probe/probe_small.yaml" \
  --speaker_config "$(pwd)/conf/speaker/resnet_small.yaml" \
  --robust_init baseline --vocode_max_utts 0 --n_trials 1000000 --test_snrs "20 10 0" "$@"
