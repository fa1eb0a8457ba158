"""Wall time, CPU time and peak memory of every recipe stage, optionally with a py-spy profile.

  tools/venv/bin/python bench/bench_stages.py --recipe_dir . --stages 1-12 \
      --out bench/stages_default [--profile] [-- run.sh options]

Runs ``./run.sh --stage N --stop_stage N [options]`` for each stage in turn, in its own session,
and samples the whole process tree every 0.5 s. Memory is the sum of the processes' PSS
(proportional set size: shared pages split among the processes that map them), so parallel
jobs add up honestly and torch's shared libraries are not counted once per process. CPU time is
the user + system time of every process the stage waited for.

With --profile, py-spy samples every Python process of the stage (--subprocesses, 20 Hz, on-CPU
only); the report then lists where the CPU went: the top functions by own samples, and a few
named buckets (imports, PESQ, STOI, torch forward/backward, Griffin-Lim, ...).

Writes OUT/stages.csv, OUT/stages.md (one row per stage and a total) and, with --profile,
OUT/profile_stage<N>.txt (py-spy's collapsed stacks) and OUT/profile.md.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_model, cpu_steal_ticks, host_speed  # noqa: E402

WRAPPER_CODE = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
# (bucket, substring of a frame) in priority order: a sample goes to the first bucket that one
# of its frames matches, from the innermost frame outwards.
BUCKETS = [
    ("imports (module loading)", "_find_and_load"),
    ("PESQ", "_pesq_inner"),
    ("STOI / ESTOI", "pystoi"),
    ("Griffin-Lim", "griffin_lim"),
    ("torch backward", "backward"),
    ("GE2E embeddings", "resemblyzer"),
    ("feature extraction", "features.py"),
    ("torch LSTM / conv forward", "forward"),
    ("kaldiio read/write", "kaldiio"),
]


def parse_stages(spec: str) -> list[int]:
    stages = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        stages += range(int(lo), int(hi or lo) + 1)
    return stages


def _session_pss_kb(sid: int, skip_comm: str) -> int:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
            # fields after the parenthesised command: state ppid pgrp session ...
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            session = int(stat[stat.rindex(")") + 2:].split()[3])
            if session != sid or comm == skip_comm:
                continue
            with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue  # the process ended between listdir and the read
    return total


class PeakMemory(threading.Thread):
    """Samples the PSS of a session's processes until stopped; keeps the peak (kB)."""

    def __init__(self, sid: int, interval: float = 0.5, skip_comm: str = "py-spy"):
        super().__init__(daemon=True)
        self.sid, self.interval, self.skip_comm = sid, interval, skip_comm
        self.peak_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, _session_pss_kb(self.sid, self.skip_comm))
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak_kb


def run_stage(recipe_dir: Path, stage: int, run_args: list[str], profile: Path | None) -> dict:
    cmd = ["./run.sh", "--stage", str(stage), "--stop_stage", str(stage), *run_args]
    if profile is not None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        # py-spy needs a Python root process; it then follows run.sh's Python descendants.
        cmd = [py_spy, "record", "--subprocesses", "--format", "raw", "--rate", "20",
               "-o", str(profile), "--", sys.executable, "-c",
               WRAPPER_CODE, *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=recipe_dir, start_new_session=True)
    sampler = PeakMemory(proc.pid)
    sampler.start()
    rc = proc.wait()
    wall = time.monotonic() - start
    peak_kb = sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"stage": stage, "rc": rc, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "peak_pss_mb": round(peak_kb / 1024)}


def summarise_profile(raw: Path, top: int = 15) -> tuple[collections.Counter, collections.Counter, int]:
    """(samples per bucket, own samples per function, total samples) of a py-spy raw file."""
    buckets: collections.Counter = collections.Counter()
    functions: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        parts = stack.replace(WRAPPER_CODE, "wrapper").split(";")  # its code holds a ";"
        processes = [f for f in parts if f.startswith("process ")]
        # the wrapper only waits for run.sh; py-spy does not see that wait as idle
        if processes and "wrapper" in processes[-1]:
            continue
        frames = [f for f in parts if not f.startswith("process ")]
        if not frames:
            continue
        total += n
        functions[frames[-1]] += n
        bucket = next((name for name, key in BUCKETS if any(key in f for f in frames)), "other")
        buckets[bucket] += n
    return buckets, functions, total


def write_outputs(out: Path, rows: list[dict], run_args: list[str], profiles: dict[int, Path],
                  host: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stages.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"Command: `tools/venv/bin/python bench/bench_stages.py {' '.join(sys.argv[1:])}`",
             f"Date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {os.cpu_count()} cores, "
             f"load average before the run {os.getloadavg()[0]:.1f}; run.sh options: "
             f"{' '.join(run_args) or '(defaults)'}", *([host] if host else []), "",
             "| stage | exit | wall (s) | CPU (s) | CPU/wall | peak PSS (MB) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['rc']} | {r['wall_s']} | {r['cpu_s']} | "
                     f"{r['cpu_s'] / max(r['wall_s'], 1e-9):.2f} | {r['peak_pss_mb']} |")
    wall = sum(r["wall_s"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows)
    lines.append(f"| **all** | | **{wall:.0f}** ({wall / 60:.1f} min) | {cpu:.0f} | "
                 f"{cpu / max(wall, 1e-9):.2f} | {max(r['peak_pss_mb'] for r in rows)} |")
    (out / "stages.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if profiles:
        md = ["# Where the CPU goes (py-spy, 20 Hz, on-CPU samples of every Python process)", ""]
        for stage, raw in profiles.items():
            if not raw.exists():
                continue
            buckets, functions, total = summarise_profile(raw)
            md += [f"## Stage {stage}: {total} samples (~{total / 20:.0f} CPU-s)", "",
                   "| bucket | share |", "|---|---:|"]
            md += [f"| {name} | {n / total:.1%} |" for name, n in buckets.most_common()]
            md += ["", "| top functions (own time) | share |", "|---|---:|"]
            md += [f"| `{name[:110]}` | {n / total:.1%} |" for name, n in functions.most_common(8)]
            md.append("")
        (out / "profile.md").write_text("\n".join(md), encoding="utf-8")


def split_run_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(this script's options, the run.sh options after ``--``)."""
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        return argv, []
    return argv[:argv.index("--")], argv[argv.index("--") + 1:]


def main(argv: list[str] | None = None) -> int:
    own, run_args = split_run_args(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe_dir", type=Path, default=Path("."))
    p.add_argument("--stages", default="1-12", help="e.g. 1-12 or 1-3,5")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--profile", action="store_true", help="py-spy profile of every stage")
    args = p.parse_args(own)
    out = args.out.resolve()
    rows, profiles = [], {}
    speed = host_speed()
    steal0, total0 = cpu_steal_ticks()

    def host_line() -> str:
        steal, total = cpu_steal_ticks()
        share = (steal - steal0) / max(total - total0, 1)
        return (f"Host: {cpu_model()}; reference workload {speed:.3f} s (bench_common.host_speed, "
                f"lower is faster); CPU steal during the run {share:.1%}")
    for stage in parse_stages(args.stages):
        raw = out / f"profile_stage{stage}.txt" if args.profile else None
        if raw is not None:
            out.mkdir(parents=True, exist_ok=True)
            profiles[stage] = raw
        row = run_stage(args.recipe_dir, stage, run_args, raw)
        rows.append(row)
        print(f"bench_stages: stage {stage}: {row}", file=sys.stderr, flush=True)
        write_outputs(out, rows, run_args, profiles, host_line())  # after every stage: a kill keeps the rest
        if row["rc"] != 0:
            print(f"bench_stages: stage {stage} failed (exit {row['rc']}); stopping",
                  file=sys.stderr)
            return 1
    print((out / "stages.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
