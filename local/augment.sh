#!/usr/bin/env bash
# Noisy data dirs with MUSAN(-layout) noise: x-vector-style noisy copies of the training set
# (data/<train_set>_aug) and fixed-SNR copies of each test set (data/<test>_snr<N>).
#
#   local/augment.sh --musan_dir DIR [--train_set train] [--test_sets "test"] [--snrs "20 10 0"]
#       [--data data] [--audio_dir dump/audio] [--config conf/augment.yaml]
#       [--types noise,music,babble] [--seed 0] [--nj 4] [--cmd "run.pl-like command"]
#
# An empty --train_set or --test_sets skips that part. Each output dir is stamped with its
# settings (inputs' fingerprints included; espnet_probe/utils/freshness.py): a dir complete with
# them is skipped, anything else (partial, or made with other settings) is removed with its wavs
# and made again.
# The python tools run --nj worker processes themselves, so --cmd (Kaldi run.pl interface)
# only wraps one job per data dir, e.g. to send it to a queue.
set -euo pipefail

musan_dir=
train_set=train
test_sets=test
snrs="20 10 0"
data=data
audio_dir=dump/audio
config=conf/augment.yaml
types=noise,music,babble
seed=0
nj=4
cmd=

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (augment.sh) $*" >&2; }
help_message=$(sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//')
. "$(dirname "$0")/../scripts/parse_options.sh"

[ -n "$musan_dir" ] || { echo "$0: --musan_dir is required" >&2; echo "${help_message}" >&2; exit 2; }
[ -d "$musan_dir" ] || { echo "$0: --musan_dir $musan_dir: not a directory" >&2; exit 1; }
[ -f "$config" ] || { echo "$0: --config $config: file not found" >&2; exit 1; }

# make_set NAME SRC OPTIONS -- COMMAND...: run COMMAND unless data/NAME is complete with the
# same settings: what it depends on (the source data dir with its audio files, the noise files,
# the config; espnet_probe.utils.freshness) and OPTIONS.
make_set() {
  local name=$1 src=$2 options=$3; shift 4
  local dst=${data}/${name} wav_dir=${audio_dir}/${name}
  local logfile=${audio_dir}/log/augment_${name}.log
  local settings=(--inputs "$src" "$musan_dir" "$config" --options "$options")
  local state
  state=$(python -m espnet_probe.bin.stamp begin "$dst" "${settings[@]}" \
    --owned "$dst" "$wav_dir" --no_resume) || exit 1
  if [ "$state" = done ]; then
    log "${dst} is complete with these settings; skipping"
    return 0
  fi
  log "making ${dst} (log: ${logfile})"
  mkdir -p "$(dirname "$logfile")"
  local rc=0
  if [ -n "$cmd" ]; then
    ${cmd} "$logfile" "$@" --dst "$dst" --wav_dir "$wav_dir" || rc=$?
  else
    "$@" --dst "$dst" --wav_dir "$wav_dir" > "$logfile" 2>&1 || rc=$?
  fi
  if [ $rc -ne 0 ]; then
    tail -n 5 "$logfile" >&2 || true
    echo "$0: making ${dst} failed (exit ${rc}); see ${logfile}" >&2
    exit 1
  fi
  grep -E '^(augment_data_dir|make_noisy_set):' "$logfile" | tail -n 1 >&2 || true
  python -m espnet_probe.bin.stamp finish "$dst" "${settings[@]}" || exit 1
}

if [ -n "$train_set" ]; then
  src=${data}/${train_set}
  [ -d "$src" ] || { echo "$0: training data dir ${src} not found" >&2; exit 1; }
  make_set "${train_set}_aug" "$src" "augment seed=${seed}" -- \
    python -m espnet_probe.bin.augment_data_dir --src "$src" --musan_dir "$musan_dir" \
      --config "$config" --seed "$seed" --nj "$nj"
fi

for test_set in $test_sets; do
  src=${data}/${test_set}
  [ -d "$src" ] || { echo "$0: test data dir ${src} not found" >&2; exit 1; }
  for snr in $snrs; do
    make_set "${test_set}_snr${snr}" "$src" "noisy_set snr=${snr} types=${types} seed=${seed}" -- \
      python -m espnet_probe.bin.make_noisy_set --src "$src" --snr "$snr" --types "$types" \
        --musan_dir "$musan_dir" --config "$config" --seed "$seed" --nj "$nj"
  done
done
log "done"
