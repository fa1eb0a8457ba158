# Job backends (Kaldi/ESPnet convention). Every parallel stage runs "${cmd} JOB=1:N log command".
#
# local (default): espnet_probe's own runner with run.pl's interface; jobs run on this machine,
#   at most --max-jobs-run at a time (default: number of cores).
# queue: Kaldi's queue.pl for Sun/Open Grid Engine; slurm: Kaldi's slurm.pl. Both ship with Kaldi
#   (egs/wsj/s5/utils/parallel/); put that directory on PATH (e.g. export
#   PATH=$KALDI_ROOT/egs/wsj/s5/utils/parallel:$PATH) and, for queue.pl, write conf/queue.conf.
#   Nothing else changes: the stages only ever call ${train_cmd} / ${decode_cmd} / ${cuda_cmd}.
cmd_backend=${CMD_BACKEND:-local}

case "${cmd_backend}" in
  local)
    export train_cmd="python -m espnet_probe.bin.run_jobs"
    export cuda_cmd="python -m espnet_probe.bin.run_jobs"
    export decode_cmd="python -m espnet_probe.bin.run_jobs"
    ;;
  queue)
    export train_cmd="queue.pl --mem 4G"
    export cuda_cmd="queue.pl --mem 8G --gpu 1"
    export decode_cmd="queue.pl --mem 4G"
    ;;
  slurm)
    export train_cmd="slurm.pl --mem 4G"
    export cuda_cmd="slurm.pl --mem 8G --gpu 1"
    export decode_cmd="slurm.pl --mem 4G"
    ;;
  *) echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (local|queue|slurm)" >&2; return 1 ;;
esac
