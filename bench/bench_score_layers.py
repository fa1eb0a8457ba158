"""Scoring every layer: one score_layers process per experiment vs one CLI call per layer.

  tools/venv/bin/python bench/bench_score_layers.py --recipe . \\
      --exp exp/probe_vgg_blstm_small_baseline --sets test [--results bench/RESULTS_score_layers.md]

Needs a recipe dir that has run stage 9 (vocoded layers) and has exp/trials/<test>/trials
(stage 11). Both ways score the same layers of --sets into fresh temporary dirs (no caches):
- score_layers: one process; GE2E embeds every layer's audio in one call, STOI/ESTOI/PESQ run
  per layer inside the same process (--nj 1, so both sides use one core);
- the obvious alternative: per layer, `score_quality` then `score_speaker` as separate
  processes, the way a per-layer loop in a shell script would call them.
The mel metrics are left out of the comparison (the alternative has no CLI for them).
Reports wall and CPU (user+sys of the children) and the ratio.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from espnet_probe.probe.summary import read_summary

PY = sys.executable


def run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        sys.exit(f"bench_score_layers: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")


def timed(fn) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe", type=Path, default=Path("."))
    p.add_argument("--exp", default="exp/probe_vgg_blstm_small_baseline")
    p.add_argument("--sets", nargs="+", default=["test"])
    p.add_argument("--results", type=Path)
    args = p.parse_args(argv)
    recipe = args.recipe.resolve()
    exp = recipe / args.exp
    layers = {s: read_summary(exp / f"decode_{s}").layer_names for s in args.sets}
    n_jobs = sum(len(v) for v in layers.values())
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=recipe / "exp") as tmp:
        tmp = Path(tmp)
        copy = tmp / "one_process"
        copy.mkdir()
        for s in args.sets:  # a probe exp with only these decode dirs, and no cached scores
            (copy / f"decode_{s}").symlink_to(exp / f"decode_{s}")
        one = timed(lambda: run([PY, "-m", "espnet_probe.bin.score_layers", "--exp", str(copy),
                                 "--trials_dir", "exp/trials", "--nj", "1"], recipe))

        def per_layer():
            for s in args.sets:
                test = s.split("_snr")[0]
                for layer in layers[s]:
                    out = tmp / "per_layer" / s / layer
                    wav_scp = exp / f"decode_{s}" / layer / "wav.scp"
                    run([PY, "-m", "espnet_probe.bin.score_quality", "--ref_scp",
                         f"data/{test}/wav.scp", "--est_scp", str(wav_scp), "--out",
                         str(out / "quality"), "--allow_subset"], recipe)
                    run([PY, "-m", "espnet_probe.bin.score_speaker", "--wav_scp", str(wav_scp),
                         "--trials", f"exp/trials/{test}/trials", "--out", str(out / "ge2e")],
                        recipe)
        alt = timed(per_layer)
    load_after = os.getloadavg()[0]
    n_utts = len((exp / f"decode_{args.sets[0]}" / layers[args.sets[0]][0] / "wav.scp")
                 .read_text().splitlines())
    table = ["| way | wall s | CPU s | wall ratio |", "| --- | ---: | ---: | ---: |",
             f"| score_layers, one process (GE2E batched over layers) | {one[0]:.1f} | "
             f"{one[1]:.1f} | 1.00 |",
             f"| score_quality + score_speaker per layer ({2 * n_jobs} processes) | {alt[0]:.1f} | "
             f"{alt[1]:.1f} | {alt[0] / one[0]:.2f} |"]
    text = "\n".join([
        "# Scoring every layer: one process vs one call per layer", "",
        f"Command: `{' '.join([Path(PY).name, *sys.argv])}`",
        f"Date: {datetime.datetime.now():%Y-%m-%d %H:%M}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load_before:.1f} before / {load_after:.1f} after", "",
        f"{args.exp}: {n_jobs} layer x condition jobs ({', '.join(args.sets)}), {n_utts} "
        "vocoded utterances each; STOI/ESTOI/PESQ and GE2E EER with 1000 bootstraps.", "",
        *table, ""])
    print(text)
    if args.results:
        args.results.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
