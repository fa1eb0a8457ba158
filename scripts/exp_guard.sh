# Sourced by local/*_train.sh: one experiment dir per training, keyed by its settings.
#   exp_begin LABEL EXP SETTINGS || exit 0   # skip a finished run with the same settings
#   exp_train LABEL EXP THREADS CMD MODULE ARGS... || exit 1
#                                            # python -m MODULE through the job backend CMD,
#                                            # ESPnet --resume continuing a run killed half-way
#   exp_finish LABEL EXP SETTINGS            # mark it done; print how long it took
# Changed settings wipe EXP (but its experiment.yaml) and start afresh, so a stale checkpoint
# is never resumed.
exp_begin() {
  local label=$1 exp=$2 settings=$3
  if [ -f "${exp}/.done" ] && [ "$(cat "${exp}/.done")" = "${settings}" ]; then
    echo "${label} ${exp}: already trained, skipped" >&2; return 1
  fi
  if [ -f "${exp}/.settings" ] && [ "$(cat "${exp}/.settings")" != "${settings}" ]; then
    echo "${label} ${exp}: settings changed, training from scratch" >&2
    # all but the records of what it and the experiments inside it are (espnet_probe/experiments.py)
    find "${exp}" -mindepth 1 ! -type d ! -name experiment.yaml -delete
    find "${exp}" -mindepth 1 -depth -type d -empty -delete
  fi
  mkdir -p "${exp}"
  echo "${settings}" > "${exp}/.settings"
  rm -f "${exp}/.done"
  exp_started=$(date +%s)
}
exp_train() {
  local label=$1 exp=$2 threads=$3 cmd=$4
  shift 4
  # shellcheck disable=SC2086
  run_followed "${label%% *} $(basename "${exp}")" "${exp}/train.log" \
    env OMP_NUM_THREADS="${threads}" ${cmd} "${exp}/train.log" python -m "$@" \
    || { echo "$0: ${label} training failed, see ${exp}/train.log" >&2
         tail -n 20 "${exp}/train.log" >&2; return 1; }
}
exp_finish() {
  echo "$3" > "$2/.done"
  echo "$1 $2: trained in $(( $(date +%s) - exp_started )) s" >&2
}
# run_followed LABEL LOG COMMAND...: run COMMAND (the job backend writing LOG) and print its
# ESPnet epoch progress to the console meanwhile (espnet_probe.bin.follow_training); returns
# COMMAND's exit status. The follower stops by itself once the job has exited.
run_followed() {
  local label=$1 log=$2 job follower status=0
  shift 2
  PROBE_HEARTBEAT=0 "$@" &   # the follower prints this job's progress, not the runner
  job=$!
  python -m espnet_probe.bin.follow_training --label "${label}" --pid "${job}" "${log}" &
  follower=$!
  wait "${job}" || status=$?
  wait "${follower}" || true
  return "${status}"
}
