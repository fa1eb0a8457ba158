"""Scoring speed on real speech: STOI+PESQ serial vs two jobs, GE2E throughput, bootstrap.

  tools/venv/bin/python bench/bench_scoring.py [--n_utts 40] [--repeats 2] [--snr 10] \\
      [--results bench/RESULTS_scoring.md]

Takes the first --n_utts // 20 utterances of each LibriSpeech train-clean-5 speaker (../shared/
data) as references and a white-noise copy at --snr dB as estimates, then times, as separate
processes the way the recipe runs them:
- score_quality serially (--nj 1 --job 1, then --merge) and as two jobs run side by side by
  the local job runner (JOB=1:2 ... --nj 2 --job JOB, then --merge); the outputs must agree;
- score_speaker (GE2E embeddings + cosine + 1000 bootstraps) with --nj 1 and --nj 2;
- in-process GE2E embedding throughput after a warm-up, and 1000 bootstrap replicates of
  EER/minDCF over 4000 trials.
Wall and CPU (user+sys) times are the best of --repeats runs, interleaved so machine load
hits each alike; on a machine shared with other work, CPU time is the steadier number.
Prints a markdown table; --results also writes it with the command, date and machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from espnet_probe.audio.io import write_wav  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--librispeech", type=Path,
                   default=REPO.parent / "shared" / "data" / "LibriSpeech" / "train-clean-5")
    p.add_argument("--n_utts", type=int, default=40)
    p.add_argument("--snr", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--results", type=Path, help="also write the table here (markdown)")
    return p.parse_args(argv)


def pick(root: Path, n: int) -> list[Path]:
    if not root.is_dir():
        sys.exit(f"bench_scoring: real data not found at {root}")
    speakers = sorted(d for d in root.iterdir() if d.is_dir())
    per = max(1, -(-n // len(speakers)))
    flacs = [f for s in speakers for f in sorted(s.glob("*/*.flac"))[:per]]
    return flacs[:n]


CPU = {"s": 0.0}  # CPU seconds of finished child processes (user + sys), accumulated by run()


def run(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of one command; its CPU seconds are added to CPU['s']."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["s"] += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"bench_scoring: failed: {shlex.join(cmd)}\n{proc.stderr[-2000:]}")
    return wall


def timed(key: str, cmds: list[list[str]], times: dict, cpus: dict) -> None:
    c0 = CPU["s"]
    times.setdefault(key, []).append(sum(run(c, REPO) for c in cmds))
    cpus.setdefault(key, []).append(CPU["s"] - c0)


def main(argv=None) -> int:
    args = parse_args(argv)
    py = sys.executable
    flacs = pick(args.librispeech, args.n_utts)
    rng = np.random.default_rng(0)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_scoring.") as tmp:
        tmp = Path(tmp)
        ref_lines, est_lines, u2s, wavs = [], [], [], []
        for f in flacs:
            wav = sf.read(f, dtype="float32")[0]
            wavs.append(wav)
            noise = rng.standard_normal(wav.size)
            noise *= np.sqrt(np.mean(wav.astype(np.float64) ** 2) / np.mean(noise ** 2))
            est = wav + noise * 10 ** (-args.snr / 20)
            est = (est / max(1.0, np.abs(est).max())).astype(np.float32)
            write_wav(tmp / "est" / f"{f.stem}.wav", est)
            ref_lines.append(f"{f.stem} {f}\n")
            est_lines.append(f"{f.stem} {tmp / 'est' / f'{f.stem}.wav'}\n")
            u2s.append(f"{f.stem} {f.parent.parent.name}\n")
        (tmp / "data").mkdir()
        (tmp / "data" / "wav.scp").write_text("".join(sorted(ref_lines)))
        (tmp / "data" / "utt2spk").write_text("".join(sorted(u2s)))
        (tmp / "est.scp").write_text("".join(sorted(est_lines)))
        audio_sec = sum(w.size for w in wavs) / 16000
        ref, est = str(tmp / "data" / "wav.scp"), str(tmp / "est.scp")
        q = [py, "-m", "espnet_probe.bin.score_quality", "--ref_scp", ref, "--est_scp", est]

        times: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        trials = tmp / "trials"
        run([py, "-m", "espnet_probe.bin.make_trials", "--data_dir", str(tmp / "data"),
             "--out", str(trials), "--n_per_class", "200", "--allow_fewer"], REPO)
        for r in range(args.repeats):
            o1, o2 = tmp / f"q1_{r}", tmp / f"q2_{r}"
            timed("serial", [q + ["--out", str(o1), "--nj", "1", "--job", "1"],
                             q + ["--out", str(o1), "--nj", "1", "--merge"]], times, cpus)
            jobs = [py, "-m", "espnet_probe.bin.run_jobs", "JOB=1:2", str(o2 / "log" / "q.JOB.log")]
            timed("nj2", [jobs + q + ["--out", str(o2), "--nj", "2", "--job", "JOB"],
                          q + ["--out", str(o2), "--nj", "2", "--merge"]], times, cpus)
            for m in ("stoi", "estoi", "pesq"):
                # pystoi's last bit can differ between processes (BLAS summation order)
                a, b = (np.array([float(x.split()[1]) for x in (o / m).read_text().splitlines()])
                        for o in (o1, o2))
                if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9, equal_nan=True):
                    sys.exit(f"bench_scoring: serial and 2-job {m} differ")
            for nj in (1, 2):
                timed(f"spk{nj}", [[py, "-m", "espnet_probe.bin.score_speaker", "--wav_scp", ref,
                                    "--trials", str(trials), "--out", str(tmp / f"spk{nj}_{r}"),
                                    "--nj", str(nj)]], times, cpus)
        import json
        summary = json.loads((tmp / "q1_0" / "summary.json").read_text())
        spk = json.loads((tmp / "spk1_0" / "result.json").read_text())

        # In-process GE2E throughput, after a warm-up (librosa's first call compiles)
        from espnet_probe.speaker.ge2e import GE2EEncoder
        t0 = time.perf_counter()
        enc = GE2EEncoder()
        load_t = time.perf_counter() - t0
        enc.embed(wavs[:1])
        t0, c0 = time.perf_counter(), time.process_time()
        enc.embed(wavs)
        embed_t, embed_cpu = time.perf_counter() - t0, time.process_time() - c0

        from espnet_probe.metrics.verification import bootstrap
        s = np.concatenate([rng.normal(1, 1, 2000), rng.normal(0, 1, 2000)])
        lab = np.r_[np.ones(2000, bool), np.zeros(2000, bool)]
        bootstrap(s, lab, 10)
        t0, c0 = time.perf_counter(), time.process_time()
        bootstrap(s, lab, 1000)
        boot_t, boot_cpu = time.perf_counter() - t0, time.process_time() - c0
    load1 = os.getloadavg()

    n = len(flacs)
    best = {k: min(v) for k, v in times.items()}
    cpu = {k: min(v) for k, v in cpus.items()}
    rows = [
        ("STOI+ESTOI+PESQ, serial (1 job + merge)", best["serial"], cpu["serial"],
         f"{n / best['serial']:.2f} utt/s, {audio_sec / best['serial']:.0f}x real time"),
        ("STOI+ESTOI+PESQ, 2 jobs via run_jobs + merge", best["nj2"], cpu["nj2"],
         f"{n / best['nj2']:.2f} utt/s, speed-up {best['serial'] / best['nj2']:.2f}x"),
        ("score_speaker --nj 1 (GE2E + cosine + 1000 boots)", best["spk1"], cpu["spk1"],
         f"{n / best['spk1']:.2f} utt/s incl. start-up"),
        ("score_speaker --nj 2", best["spk2"], cpu["spk2"],
         f"{n / best['spk2']:.2f} utt/s, speed-up {best['spk1'] / best['spk2']:.2f}x"),
        ("GE2E embed in-process (1 thread, warm)", embed_t, embed_cpu,
         f"{n / embed_t:.2f} utt/s, {embed_t / n * 1000:.0f} ms/utt, "
         f"{audio_sec / embed_t:.0f}x real time (model load {load_t:.2f} s)"),
        ("bootstrap EER+minDCF, 1000 x 4000 trials", boot_t, boot_cpu, ""),
    ]
    lines = [f"{n} LibriSpeech train-clean-5 utterances, {audio_sec:.0f} s of audio; estimates = "
             f"reference + white noise at {args.snr:g} dB; best of {args.repeats} runs.", "",
             "| task | wall s | CPU s | throughput (wall) |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {name} | {t:.2f} | {c:.2f} | {extra} |" for name, t, c, extra in rows]
    lines += ["", f"Scores (sanity): STOI {summary['stoi']['mean']:.3f}, ESTOI "
              f"{summary['estoi']['mean']:.3f}, PESQ {summary['pesq']['mean']:.2f} "
              f"({summary['pesq_failed']['count']} failed); GE2E on the clean references: "
              f"EER {spk['eer']:.2f}% over {spk['n_target']}+{spk['n_nontarget']} trials.",
              f"Load average (1 min) before / after: {load0[0]:.2f} / {load1[0]:.2f} "
              f"on {os.cpu_count()} cores."]
    table = "\n".join(lines)
    print(table)
    if args.results:
        cpu = "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        head = ["# Scoring benchmark", "",
                f"Command: `tools/venv/bin/python bench/bench_scoring.py "
                f"{shlex.join(sys.argv[1:] if argv is None else argv)}`",
                f"Date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
                f"Machine: {platform.machine()}, {cpu}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
                ""]
        args.results.write_text("\n".join(head) + "\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
