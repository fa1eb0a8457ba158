# Sourced by local/*_train.sh: one experiment dir per training, keyed by its settings.
#   exp_begin LABEL EXP SETTINGS || exit 0   # skip a finished run with the same settings
#   exp_train LABEL EXP THREADS CMD MODULE ARGS... || exit 1
#                                            # python -m MODULE through the job backend CMD,
#                                            # ESPnet --resume continuing a run killed half-way
#   exp_finish LABEL EXP SETTINGS            # mark it done; print how long it took
# The freshness rule (espnet_probe/utils/freshness.py, through bin.stamp): changed settings
# wipe EXP (but the experiment records) and start afresh, so a stale checkpoint is never resumed.
exp_begin() {
  local label=$1 exp=$2 settings=$3 state
  state=$(python -m espnet_probe.bin.stamp begin "${exp}" "${settings}") || exit 1
  case "${state}" in
    done) echo "${label} ${exp}: already trained, skipped" >&2; return 1 ;;
    changed) echo "${label} ${exp}: settings changed, training from scratch" >&2 ;;
  esac
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
  python -m espnet_probe.bin.stamp finish "$2" "$3" || exit 1
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
