"""Console progress of an ESPnet training job, read from its log while it runs.

  python -m espnet_probe.bin.follow_training --label "ASR vgg_blstm_small_baseline" \\
      --pid JOB_PID exp/asr_vgg_blstm_small_baseline/train.log

The job writes everything to its own log (any backend: the local runner, queue.pl, slurm.pl);
this prints, for a person at the console, one line per finished epoch (epoch k/N, train and
valid loss, time per epoch, the ETA of this run from the mean epoch time) and, while an epoch runs, a line at least every
--interval seconds with the batches done and the running train loss.  It stops when the log's
accounting line ("# Ended") appears or when --pid has exited.  It never touches the job.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

STARTED = re.compile(r"(\d+)/(\d+)epoch started(?:\. Estimated time to finish: (.+?))?\s*$")
RESULTS = re.compile(r"(\d+)epoch results: \[train\] (.*?)(?:\[valid\] (.*))?$")
BATCH = re.compile(r"(\d+)epoch:train:\d+-(\d+)batch: (.*)$")
LOSS = re.compile(r"(?:^|[ ,])loss=([-\d.e+]+)")
EPOCH_TIME = re.compile(r"time=(?:(\d+) hours?,? )?(?:(\d+) minutes? and )?([\d.]+) seconds")


def _loss(fields: str | None) -> str:
    m = LOSS.search(fields or "")
    return m.group(1) if m else "?"


class Progress:
    """Turns log lines into console lines; ``line()`` returns what to print, if anything."""

    def __init__(self, label: str):
        self.label = label
        self.epoch, self.max_epoch = 0, 0
        self.batches, self.train_loss = 0, None
        self.epoch_seconds: list[float] = []

    def line(self, text: str) -> str | None:
        m = STARTED.search(text)
        if m:
            self.epoch, self.max_epoch = int(m.group(1)), int(m.group(2))
            self.batches, self.train_loss = 0, None
            if self.epoch == 1:  # a new ESPnet run (e.g. the next encoder-growth stage)
                self.epoch_seconds = []
            return None
        m = RESULTS.search(text)
        if m:
            epoch = int(m.group(1))
            out = (f"[{self.label}] epoch {epoch}/{self.max_epoch or '?'}: train loss "
                   f"{_loss(m.group(2))}, valid loss {_loss(m.group(3))}")
            took = EPOCH_TIME.findall(text)  # train, then valid
            if took:
                self.epoch_seconds.append(sum(3600 * int(h or 0) + 60 * int(mins or 0) + float(secs)
                                              for h, mins, secs in took))
                mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
                out += f", {self.epoch_seconds[-1]:.0f} s/epoch"
                if self.max_epoch > epoch:
                    out += f", ETA {mean * (self.max_epoch - epoch) / 60:.0f} min"
            return out
        m = BATCH.search(text)
        if m:
            self.batches, self.train_loss = int(m.group(2)), _loss(m.group(3))
        return None

    def heartbeat(self) -> str:
        if not self.epoch:
            return f"[{self.label}] starting (loading data and model)"
        if not self.batches:  # ESPnet logs every ~1/20 of an epoch
            return f"[{self.label}] epoch {self.epoch}/{self.max_epoch}: running"
        return (f"[{self.label}] epoch {self.epoch}/{self.max_epoch}: {self.batches} batches, "
                f"train loss {self.train_loss or '?'}")


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def follow(log: Path, label: str, pid: int | None, interval: float, poll: float = 2.0,
           out=sys.stderr) -> None:
    progress = Progress(label)
    offset, last_print, pending = 0, time.time(), ""
    while True:
        ended = False
        if log.is_file():
            if log.stat().st_size < offset:  # the log was started afresh
                offset, pending = 0, ""
            with open(log, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            lines = (pending + chunk).split("\n")
            pending = lines.pop()
            for text in lines:
                ended = ended or text.startswith("# Ended")
                shown = progress.line(text)
                if shown:
                    print(shown, file=out, flush=True)
                    last_print = time.time()
        if ended or not _alive(pid):
            return
        if time.time() - last_print >= interval:
            print(progress.heartbeat(), file=out, flush=True)
            last_print = time.time()
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("log", type=Path)
    p.add_argument("--label", required=True)
    p.add_argument("--pid", type=int, help="stop when this process (the job) has exited")
    p.add_argument("--interval", type=float, default=30.0,
                   help="seconds between lines while an epoch runs")
    args = p.parse_args(argv)
    try:
        follow(args.log, args.label, args.pid, args.interval)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
