"""The default run on a GPU machine, stage by stage: the figure to put beside BENCHMARKS.md section 1.

  tools/venv/bin/python bench/bench_gpu.py --recipe_dir <fresh clone> --out bench/results/default_run_gpu

Runs bench/bench_stages.py over stages 1-13 of ``./run.sh --ngpu 1 --gpu_inference true`` (the
trainings of stages 5, 7 and 10 on the GPU through ESPnet's --ngpu; decoding, probe decoding,
the speaker-ID probes and scoring as ${cuda_cmd} jobs with --device cuda; features, noise,
vocoding and PESQ/STOI stay on the CPU) and writes the machine it ran on (GPU name and memory,
CPU cores, torch and CUDA versions) to OUT/machine.json beside bench_stages' tables.
It refuses to start without a CUDA device, so a CPU figure is never filed as a GPU one.
Extra run.sh options go after ``--``, e.g. ``-- --asr_parallel 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_stages  # noqa: E402
from bench_stages import split_run_args  # noqa: E402

GPU_OPTIONS = ["--ngpu", "1", "--gpu_inference", "true"]


def machine() -> dict:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device visible (torch.cuda.is_available() is False); "
                         "run it on a GPU machine with a CUDA build of torch")
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1),
        "gpus_visible": torch.cuda.device_count(), "cpu_cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "load_average_before": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    own, extra = split_run_args(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe_dir", type=Path, default=Path("."))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stages", default="1-13")
    args = p.parse_args(own)
    info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "machine.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return bench_stages.main(["--recipe_dir", str(args.recipe_dir), "--stages", args.stages,
                              "--out", str(args.out), "--", *GPU_OPTIONS, *extra])


if __name__ == "__main__":
    sys.exit(main())
