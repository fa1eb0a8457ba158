"""Local job runner with Kaldi run.pl's interface, for ``${cmd} JOB=1:N log/x.JOB.log command``.

    python -m espnet_probe.bin.run_jobs [--max-jobs-run N] [--mem 4G ...] [JOB=1:N] LOG CMD...

Every ``JOB`` in LOG and CMD is replaced by the job number; each job runs under bash with its
output in its own log, which starts with the command and ends with Kaldi's accounting lines.
Cluster options (--mem, --num-threads, --gpu, --time, ...) are accepted and ignored here, so
one cmd.sh line can switch between this runner and Kaldi's queue.pl / slurm.pl unchanged.
Exit status is non-zero when any job fails, naming the failed jobs' logs.

Progress: while jobs run, every $PROBE_HEARTBEAT seconds (default 30; 0: never) one line per
running job goes to the console (stderr) with its elapsed time and the last line of its log,
so a long stage is never silent.  Trainings set it to 0: follow_training prints their epochs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime
from pathlib import Path

JOB_RANGE = re.compile(r"^([A-Za-z_]\w*)=(\d+):(\d+)$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "2>&1"}


def _quote(arg: str) -> str:
    return arg if arg in SHELL_OPERATORS else shlex.quote(arg)


def parse_args(argv: list[str]) -> tuple[int, str, int, int, str, str]:
    max_jobs = os.cpu_count() or 1
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        opt = argv[i]
        if "=" in opt:
            name, value, step = opt[2:].split("=", 1)[0], opt.split("=", 1)[1], 1
        else:
            if i + 1 >= len(argv):
                raise SystemExit(f"run_jobs: option {opt} needs a value")
            name, value, step = opt[2:], argv[i + 1], 2
        if name in ("max-jobs-run", "max_jobs_run"):
            max_jobs = int(value)
        i += step
    rest = argv[i:]
    var, first, last = "JOB", 1, 1
    if rest and JOB_RANGE.match(rest[0]):
        var, lo, hi = JOB_RANGE.match(rest[0]).groups()
        first, last = int(lo), int(hi)
        if last < first:
            raise SystemExit(f"run_jobs: empty job range {rest[0]}")
        rest = rest[1:]
    if len(rest) < 2:
        raise SystemExit(__doc__.strip().splitlines()[2])
    log, cmd = rest[0], " ".join(_quote(a) for a in rest[1:]) if len(rest) > 2 else rest[1]
    return max_jobs, var, first, last, log, cmd


def run_one(var: str, job: int, log_template: str, cmd_template: str) -> tuple[int, str]:
    log = Path(log_template.replace(var, str(job)))
    cmd = re.sub(rf"\b{re.escape(var)}\b", str(job), cmd_template)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w", encoding="utf-8") as f:
        f.write(f"# {cmd}\n# Started at {datetime.now():%c}\n#\n")
        f.flush()
        code = subprocess.run(["bash", "-c", cmd], stdout=f, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode
        elapsed = time.time() - start
        f.write(f"# Accounting: time={elapsed:.0f} threads=1\n"
                f"# Ended (code {code}) at {datetime.now():%c}, elapsed time {elapsed:.0f} seconds\n")
    return code, str(log)


def error_line(log: str | Path) -> str:
    """The line of a failed job's log that says why: its last error, else its last output."""
    with open(log, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 65536))
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    output = [line for line in lines if line and not line.startswith("#")]
    errors = [line for line in output if re.search(r"error", line, re.IGNORECASE)]
    return (errors or output or ["(no output)"])[-1]


def last_line(log: str | Path, width: int = 140) -> str:
    """The newest output line of a running job's log (progress bars' carriage returns split)."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    text = ANSI_ESCAPE.sub("", text)  # nested tqdm bars move the cursor with "ESC[A"
    lines = [line.strip() for line in re.split(r"[\r\n]", text)]
    lines = [line for line in lines if line and not line.startswith("#")]
    line = lines[-1] if lines else "(no output yet)"
    return line if len(line) <= width else line[: width - 3] + "..."


def heartbeat_seconds() -> float:
    value = os.environ.get("PROBE_HEARTBEAT", "30")
    try:
        return max(0.0, float(value))
    except ValueError:
        raise SystemExit(f"run_jobs: PROBE_HEARTBEAT must be a number of seconds, got {value!r}")


def main(argv: list[str] | None = None) -> int:
    max_jobs, var, first, last, log, cmd = parse_args(sys.argv[1:] if argv is None else argv)
    jobs = list(range(first, last + 1))
    interval = heartbeat_seconds()
    started: dict[int, float] = {}

    def run(job: int) -> tuple[int, str]:
        started[job] = time.time()
        try:
            return run_one(var, job, log, cmd)
        finally:
            started.pop(job, None)

    with ThreadPoolExecutor(max_workers=max(1, max_jobs)) as pool:
        futures = [pool.submit(run, j) for j in jobs]
        while interval and not all(f.done() for f in futures):
            done = wait(futures, timeout=interval).done
            if len(done) == len(futures):
                break
            for job, since in sorted(started.items()):
                path = log.replace(var, str(job))
                where = f"job {job}/{len(jobs)} " if len(jobs) > 1 else ""
                print(f"[{path}] {where}running {time.time() - since:.0f} s: {last_line(path)}",
                      file=sys.stderr, flush=True)
        results = [f.result() for f in futures]
    failed = [(code, path) for code, path in results if code != 0]
    if failed:
        for code, path in failed:
            print(f"run_jobs: job failed with code {code}: {error_line(path)} (log: {path})",
                  file=sys.stderr)
        print(f"run_jobs: {len(failed)} / {len(results)} jobs failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
