#!/usr/bin/env bash
# Stage 3: features of every set through the job backend, skipping sets already complete.
# --sets are clean sets; --noisy_sets are "noisy:clean" pairs (targets come from the clean audio);
# --stats_sets also accumulate global CMVN statistics.
set -euo pipefail
nj=2
cmd="python -m espnet_probe.bin.run_jobs"
config=conf/fbank.yaml
datadir=data
featdir=dump/fbank
sets=""
noisy_sets=""
stats_sets=""
help_message="Usage: $0 --sets 'train dev' --noisy_sets 'train_aug:train' [--nj N --cmd CMD]"
. "$(dirname "$0")/../scripts/parse_options.sh"

featurise() {  # name [clean_name]
  local name=$1 clean=${2:-} out=${featdir}/$1 extra=()
  local state
  # the freshness rule: finished jobs of an interrupted run are kept only for the same settings
  state=$(python -m espnet_probe.bin.make_features --begin --config "${config}" --nj "${nj}" \
    --data_dir "${datadir}/${name}" --out_dir "${out}" ${clean:+--clean_dir "${datadir}/${clean}"}) || exit 1
  if [ "${state}" = done ]; then
    echo "features of ${name}: already complete, skipped" >&2; return 0
  fi
  [ -n "${clean}" ] && extra+=(--clean_dir "${datadir}/${clean}")
  case " ${stats_sets} " in *" ${name} "*) extra+=(--stats) ;; esac
  mkdir -p "${out}/log"
  ${cmd} JOB=1:"${nj}" "${out}/log/fbank.JOB.log" \
    python -m espnet_probe.bin.make_features --data_dir "${datadir}/${name}" --out_dir "${out}" \
      --config "${config}" --nj "${nj}" --job JOB "${extra[@]}"
  python -m espnet_probe.bin.make_features --data_dir "${datadir}/${name}" --out_dir "${out}" \
    --config "${config}" --nj "${nj}" --merge "${extra[@]}"
}

for s in ${sets}; do featurise "$s"; done
for pair in ${noisy_sets}; do featurise "${pair%%:*}" "${pair#*:}"; done
