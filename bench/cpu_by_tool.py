"""Where a command's CPU goes, by Python program: every Python process the command starts (the
test run's xdist workers, run.sh's jobs, ESPnet's tools) appends its own CPU seconds and argv to
a log when it exits, and the log is summed per program.

  tools/venv/bin/python bench/cpu_by_tool.py --log /tmp/cpu.tsv -- tools/venv/bin/python -m pytest tests
  tools/venv/bin/python bench/cpu_by_tool.py --log /tmp/cpu.tsv          # the table of a log

How: a ``sitecustomize`` module in a temporary dir put first on PYTHONPATH registers an atexit
hook in every Python process (a process killed by a signal is not counted). "program" is the
module or script run (``espnet_probe/bin/score_layers.py``, ``espnet2/bin/asr_train.py``, ``-c``
for the xdist workers). BENCHMARKS.md section 10 has a run of the whole suite.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SITECUSTOMIZE = '''\
import atexit, os, resource, sys


def _log_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    line = "%.2f\\t%s\\n" % (usage.ru_utime + usage.ru_stime, " ".join(sys.argv)[:300].replace("\\t", " "))
    with open(os.environ["CPU_BY_TOOL_LOG"], "a") as f:
        f.write(line)


atexit.register(_log_cpu)
'''


def program(argv: str) -> str:
    first = argv.split(" ", 1)[0]
    parts = Path(first).parts
    for root in ("espnet_probe", "espnet2", "espnet"):
        if root in parts:
            return "/".join(parts[parts.index(root):])
    return Path(first).name or first


def table(log: Path, top: int) -> str:
    cpu, count = collections.Counter(), collections.Counter()
    for line in log.read_text().splitlines():
        seconds, _, argv = line.partition("\t")
        cpu[program(argv)] += float(seconds)
        count[program(argv)] += 1
    total = sum(cpu.values())
    rows = [f"{sum(count.values())} processes, {total:.0f} s of CPU", "",
            "| program | processes | CPU s | share | s / process |", "|---|---:|---:|---:|---:|"]
    for name, seconds in cpu.most_common(top):
        rows.append(f"| {name} | {count[name]} | {seconds:.0f} | {seconds / total:.0%} | "
                    f"{seconds / count[name]:.1f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--log", type=Path, required=True, help="appended to; read for the table")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("command", nargs="*", help="after --: the command to run")
    args = p.parse_args()
    if args.command:
        with tempfile.TemporaryDirectory() as hook_dir:
            (Path(hook_dir) / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env = dict(os.environ, CPU_BY_TOOL_LOG=str(args.log.resolve()),
                       PYTHONPATH=os.pathsep.join(filter(None, [hook_dir, os.environ.get("PYTHONPATH")])))
            status = subprocess.run(args.command, env=env).returncode
        if status:
            print(f"cpu_by_tool: the command exited {status}", file=sys.stderr)
    print(table(args.log, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
