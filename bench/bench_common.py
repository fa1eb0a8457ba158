"""Helpers shared by the bench scripts: real utterances to time on, and the machine's name."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
LIBRISPEECH = REPO.parent / "shared" / "data" / "LibriSpeech" / "train-clean-5"


def pick_utterances(root: Path, n: int, lo: float, hi: float) -> list[Path]:
    """First utterance of lo..hi seconds (in sorted order) of each of the first n speakers."""
    if not root.is_dir():
        sys.exit(f"bench: real data not found at {root} (see ../shared/data/README)")
    picked = []
    for spk in sorted(root.iterdir(), key=lambda d: d.name):
        for flac in sorted(spk.glob("*/*.flac")):
            if lo <= sf.info(flac).duration <= hi:
                picked.append(flac)
                break
        if len(picked) == n:
            break
    return picked


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# A fixed one-thread workload of the default run's kind (a BLSTM layer's forward + backward over
# 16 x 250 frames): the same code took 2.1x the CPU time on one host of this VM type as on
# another (BENCHMARKS.md section 1), so every whole-run figure carries the host's time for it.
HOST_SPEED_CODE = """
import time, torch
torch.manual_seed(0); torch.set_num_threads(1)
lstm = torch.nn.LSTM(240, 128, batch_first=True, bidirectional=True)
x = torch.randn(16, 250, 240)
times = []
for _ in range(6):
    t = time.perf_counter(); lstm(x)[0].sum().backward(); times.append(time.perf_counter() - t)
print(sorted(times[1:])[2])
"""


def host_speed() -> float:
    """Median seconds of the reference workload on this host (lower is faster)."""
    out = subprocess.run([sys.executable, "-c", HOST_SPEED_CODE], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


def cpu_steal_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs since boot, from /proc/stat (0, 0 where unreadable)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def untrained_asr(config: Path, stats: str, out_dir: Path | None = None):
    """An untrained ESPnet ASR model of a project config's shape (CMVN from ``stats``); with
    ``out_dir``, saved there as ESPnet saves one (config.yaml + model.pth)."""
    import tempfile

    import torch
    import yaml

    from espnet_probe.asr.pretraining import espnet_config  # first: no nltk downloads (utils/offline)
    from espnet_probe.asr.register import register_encoders
    from espnet2.tasks.asr import ASRTask

    register_encoders()
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(out_dir) if out_dir is not None else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        tokens = where / "tokens.txt"
        tokens.write_text("<blank>\n<unk>\n<space>\na\n<sos/eos>\n")
        args = ASRTask.get_parser().parse_args(
            ["--config", str(espnet_config(config, Path(tmp) / "asr.yaml")), "--token_list", str(tokens),
             "--normalize_conf", f"stats_file={Path(stats).resolve()}", "--output_dir", str(where)])
        model = ASRTask.build_model(args).eval()
        if out_dir is not None:
            (where / "config.yaml").write_text(yaml.safe_dump(vars(args)))
            torch.save(model.state_dict(), where / "model.pth")
        return model, where
