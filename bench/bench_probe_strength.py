"""How strong must a probe be?  A sweep of probe training settings through the real trainer.

Each variant trains the frame-wise probes of one ASR model with espnet_probe.bin.probe_train
(ESPnet's trainer, per-layer best epoch kept) on the same data, and reports per layer the best
validation L1 and the epoch it was reached, with the wall and CPU time of the run: the cost of
a stronger probe, in the same run as the current default.  The L1 of the best constant
predictor (each bin's mean over the training set) on the validation set gives the scale.

  tools/venv/bin/python bench/bench_probe_strength.py --recipe_dir egs/librispeech_probe \\
      --asr_config conf/asr/vgg_blstm_small.yaml --asr_init random \\
      --layers input cnn1 pool1 pool2 blstm1 blstm5 --max_epoch 8 \\
      --variant "default:hidden_size=128,lr=0.002,sample_frames=0,batch_bins=2000000" \\
      --variant "sampled:hidden_size=128,lr=0.002,sample_frames=1000,batch_bins=500000" \\
      --out bench/results/probe_strength

--asr_config builds an untrained model of that shape (the random-encoder control's weights
come from --asr_init random either way); --asr_exp takes a trained experiment.
A variant is ``name:key=value,...`` with keys hidden_size, sample_frames, mix_batches (probe_conf), lr
(optim_conf), batch_bins, max_epoch, patience, scheduler and gamma (trainer).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np

from bench_common import REPO, cpu_model, untrained_asr

PROBE_KEYS = {"hidden_size", "sample_frames", "mix_batches"}
TRAINER_KEYS = {"batch_bins", "max_epoch", "patience", "scheduler"}


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    settings = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key not in PROBE_KEYS | TRAINER_KEYS | {"lr", "gamma"}:
            raise SystemExit(f"--variant {name}: unknown key {key!r}")
        settings[key] = value
    return name, settings


def constant_l1(train_scp: Path, valid_scp: Path, n_mels: int = 80) -> float:
    """L1 on the validation set of the best constant predictor (per-bin median of training)."""
    train = np.concatenate([m[:, :n_mels] for _, m in kaldiio.load_scp_sequential(str(train_scp))])
    median = np.median(train, axis=0)
    valid = np.concatenate([m[:, :n_mels] for _, m in kaldiio.load_scp_sequential(str(valid_scp))])
    return float(np.abs(valid - median).mean())


def subset(feats_root: Path, name: str, n: int, work: Path) -> Path:
    """n utterances spread evenly over a dump dir (so over its speakers), as a dump dir."""
    out = work / f"{name}_{n}"
    out.mkdir(parents=True, exist_ok=True)
    for f in ("feats.scp", "feats_shape"):
        lines = (feats_root / name / f).read_text().splitlines()
        lines = lines[:: max(1, len(lines) // n)][:n]
        (out / f).write_text("\n".join(lines) + "\n")
    return out


def checkpoint_of(asr_exp: Path) -> Path:
    for name in ("valid.loss.ave.pth", "valid.loss.best.pth", "latest.pth", "model.pth"):
        if (asr_exp / name).exists():
            return asr_exp / name
    raise SystemExit(f"no checkpoint in {asr_exp}")


def run_variant(args, name: str, settings: dict, out: Path) -> dict:
    exp = out / name
    cmd = [sys.executable, "-m", "espnet_probe.bin.probe_train", "--config", str(args.config),
           "--output_dir", str(exp), "--ngpu", "0", "--resume", "true",
           "--asr_train_config", str(args.asr_exp / "config.yaml"),
           "--asr_model_file", str(checkpoint_of(args.asr_exp)), "--asr_init", args.asr_init,
           "--train_data_path_and_name_and_type", f"{args.feats_root / args.train_set}/feats.scp,speech,kaldi_ark",
           "--train_shape_file", str(args.feats_root / args.train_set / "feats_shape"),
           "--valid_data_path_and_name_and_type", f"{args.feats_root / args.valid_set}/feats.scp,speech,kaldi_ark",
           "--valid_shape_file", str(args.feats_root / args.valid_set / "feats_shape"),
           "--max_epoch", str(args.max_epoch), "--layers", *args.layers]
    for key, value in settings.items():
        if key in PROBE_KEYS:
            cmd += ["--probe_conf", f"{key}={value}"]
        elif key == "lr":
            cmd += ["--optim_conf", f"lr={value}"]
        elif key == "gamma":  # of --scheduler exponentiallr
            cmd += ["--scheduler_conf", f"gamma={value}"]
        else:
            cmd += [f"--{key}", value]
    exp.mkdir(parents=True, exist_ok=True)
    done = args.recipe_dir / exp / "bench_result.json"
    if done.is_file() and json.loads(done.read_text())["cmd"] == cmd:
        return json.loads(done.read_text())["result"]  # finished before: keep its timing
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    with open(exp / "bench.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=args.recipe_dir,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = json.loads((args.recipe_dir / exp / "probe_training.json").read_text())
    result = {"name": name, "settings": settings, "wall": wall,
              "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
              "load": os.getloadavg()[0], "epochs": record["epochs"], "layers": record["layers"]}
    done.write_text(json.dumps({"cmd": cmd, "result": result}))
    return result


def stoi_per_layer(exp: Path, feats_dir: Path, data_dir: Path, n_utts: int, fbank_config: Path,
                   vocoder_config: Path) -> dict[str, float]:
    """Mean STOI against the clean audio of each layer's Griffin-Lim reconstruction, and of the
    oracle (Griffin-Lim of the input mel), on n utterances spread over the set."""
    import soundfile
    import torch

    from espnet_probe.audio.features import FbankConfig
    from espnet_probe.audio.vocoder import VocoderConfig, vocode
    from espnet_probe.data.model_inputs import open_inputs
    from espnet_probe.metrics.quality import score_pair
    from espnet_probe.probe.trainer import LAYER_BEST
    from espnet_probe.tasks.probe import ProbeTask
    from espnet_probe.utils.kaldi_dir import read_table

    model, _ = ProbeTask.build_model_from_file(exp / "config.yaml", exp / LAYER_BEST, "cpu")
    model.eval()
    feats = open_inputs(feats_dir, "feats")
    utts = sorted(feats.entries)
    utts = utts[:: max(1, len(utts) // n_utts)][:n_utts]
    wavs = read_table(data_dir / "wav.scp")
    fbank, voc = FbankConfig.from_yaml(fbank_config), VocoderConfig.from_yaml(vocoder_config)
    scores: dict[str, list[float]] = {}
    for utt in utts:
        x = torch.from_numpy(feats.read(utt))[None]
        with torch.no_grad():
            mels = {n: m[0].numpy() for n, m in model.predict(x, torch.tensor([x.size(1)])).items()}
        mels["oracle"] = x[0, :, :80].numpy()
        ref, _ = soundfile.read(wavs[utt], dtype="float32")
        for name, mel in mels.items():
            est = vocode([mel], [ref.size], fbank, voc)[0]
            scores.setdefault(name, []).append(score_pair(utt, ref, est, ("stoi",)).values["stoi"])
    return {name: float(np.mean(v)) for name, v in scores.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe_dir", type=Path, required=True, help="where dump/ and exp/ are")
    p.add_argument("--asr_exp", type=Path, help="a trained ASR exp dir, relative to --recipe_dir")
    p.add_argument("--asr_config", type=Path, help="instead: an untrained model of this shape")
    p.add_argument("--stats", type=Path, default=Path("dump/fbank/train/cmvn.npz"),
                   help="its CMVN statistics, relative to --recipe_dir")
    p.add_argument("--asr_init", choices=["trained", "random"], default="trained")
    p.add_argument("--config", type=Path, default=REPO / "bench/conf/probe_sweep_base.yaml",
                   help="base probe config; variants override what they change")
    p.add_argument("--feats_root", type=Path, default=Path("dump/fbank"))
    p.add_argument("--train_set", default="train")
    p.add_argument("--max_utts", type=int, default=0,
                   help="train on N utterances spread over --train_set (0: all)")
    p.add_argument("--valid_set", default="dev")
    p.add_argument("--layers", nargs="+", default=["all"])
    p.add_argument("--max_epoch", type=int, default=8)
    p.add_argument("--variant", action="append", required=True, help="name:key=value,...")
    p.add_argument("--out", type=Path, required=True, help="results dir (md + csv)")
    p.add_argument("--stoi_set", default="test", help="clean test set for the STOI check")
    p.add_argument("--stoi_utts", type=int, default=12, help="utterances of it (0: no STOI)")
    args = p.parse_args()
    args.recipe_dir = args.recipe_dir.resolve()
    args.config = args.config.resolve()
    args.asr_config = args.asr_config and args.asr_config.resolve()
    out = args.out.resolve()
    os.chdir(args.recipe_dir)  # the scp files name their arks relative to it
    feats = args.recipe_dir / args.feats_root
    if (args.asr_exp is None) == (args.asr_config is None):
        p.error("give --asr_exp or --asr_config")
    if args.asr_config is not None:
        args.asr_exp = Path("exp") / "bench_probe_strength" / f"untrained_{args.asr_config.stem}"
        untrained_asr(args.asr_config, args.recipe_dir / args.stats,
                      args.recipe_dir / args.asr_exp)
    work = Path("exp") / "bench_probe_strength" / f"{args.asr_exp.name}_{args.asr_init}"
    if args.max_utts:
        args.train_set = subset(feats, args.train_set, args.max_utts, args.recipe_dir / work)
    reference = constant_l1(feats / args.train_set / "feats.scp", feats / args.valid_set / "feats.scp")
    results = [run_variant(args, *parse_variant(v), work) for v in args.variant]
    for r in results:
        r["stoi"] = (stoi_per_layer(work / r["name"], feats / args.stoi_set, Path("data") / args.stoi_set,
                                    args.stoi_utts, REPO / "conf/fbank.yaml", REPO / "conf/vocoder.yaml")
                     if args.stoi_utts else {})

    out.mkdir(parents=True, exist_ok=True)
    layers = list(results[0]["layers"])
    stem = f"{args.asr_exp.name}_{args.asr_init}"
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "settings", "epochs", "wall_s", "cpu_s", "layer", "best_valid_l1",
                    "best_epoch", "converged", "valid_curve"])
        for r in results:
            for layer, rec in r["layers"].items():
                w.writerow([r["name"], json.dumps(r["settings"]), r["epochs"], round(r["wall"]),
                            round(r["cpu"]), layer, round(rec["valid_l1"], 4), rec["best_epoch"],
                            rec["converged"], " ".join(f"{v:.3f}" for v in rec["valid_curve"])])
    base = results[0]
    lines = [f"# Probe strength sweep: {args.asr_exp.name} ({args.asr_init} encoder)", "",
             f"Command: `tools/venv/bin/python bench/bench_probe_strength.py {' '.join(sys.argv[1:])}`", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end; "
             f"one thread per run. Train {args.train_set}, validation {args.valid_set}; "
             f"best constant predictor's validation L1: **{reference:.3f}**.", "",
             "Best validation L1 per layer (epoch reached), time of the whole run, and its ratio "
             f"to the first variant ({base['name']}):", "",
             "| variant | settings | epochs | " + " | ".join(layers) + " | wall s | CPU s | CPU ratio |",
             "|---|---|---:|" + "---:|" * len(layers) + "---:|---:|---:|"]
    for r in results:
        cells = [f"{r['layers'][n]['valid_l1']:.3f} ({r['layers'][n]['best_epoch']})" for n in layers]
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        lines.append(f"| {r['name']} | {settings} | {r['epochs']} | " + " | ".join(cells)
                     + f" | {r['wall']:.0f} | {r['cpu']:.0f} | {r['cpu'] / base['cpu']:.2f} |")
    if args.stoi_utts:
        names = layers + ["oracle"]
        lines += ["", f"STOI against the clean audio, Griffin-Lim of each layer's reconstruction "
                  f"({args.stoi_utts} utterances of {args.stoi_set}; `oracle` = Griffin-Lim of the "
                  "input mel itself):", "",
                  "| variant | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for r in results:
            lines.append(f"| {r['name']} | " + " | ".join(f"{r['stoi'].get(n, float('nan')):.3f}"
                                                           for n in names) + " |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
