"""ASR and probe training scale out data-parallel through ESPnet's own DDP, on CPU (gloo).

How ESPnet runs DDP without a GPU (espnet2 202511, read from its sources):
- ``--multiprocessing_distributed true`` (the default) spawns one worker per GPU; with
  ``--ngpu 0`` or ``1``, ``resolve_distributed_mode`` switches it off, so ESPnet never spawns
  CPU workers itself.
- ``espnet2.bin.launch --ngpu 0`` on one node starts a single, non-distributed process; it
  starts several CPU processes only over ssh (``--host``, one process per host).
- The supported CPU path is ESPnet's "external launcher" mode, which is what launch.py writes
  for each of its processes: one process per rank, each given

      --ngpu 0 --multiprocessing_distributed false --dist_backend gloo
      --dist_world_size N --dist_rank R --dist_init_method file:///a/path/that/does/not/exist

  (or, instead of the file, ``--dist_master_addr 127.0.0.1 --dist_master_port P``).

ESPnet then gives each rank every mini-batch's share ``batch[rank::N]`` and weights the loss
so that the averaged gradient is the whole mini-batch's: without dropout, 2 processes train
the same model as 1 (checked below for the ASR model, through its growth stages).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import LIBRISPEECH, need
from espnet_probe.audio.features import FbankConfig, LogMelExtractor

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
ASR_FIXTURE = ROOT / "tests" / "fixtures" / "asr_tiny"
N_UTTS = 8
DDP_TIMEOUT = 600  # hang guard (not a speed check): a lost rank would otherwise hang the rest


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    """Features, transcripts, char tokens and CMVN stats of the shortest LibriSpeech utterances."""
    flacs = sorted(need(LIBRISPEECH / "train-clean-5").rglob("*.flac"))
    shortest = sorted(sorted(flacs, key=lambda f: (soundfile.info(str(f)).frames, f.name))[:N_UTTS])
    out = tmp_path_factory.mktemp("ddp_dump")
    extractor = LogMelExtractor(FbankConfig())
    texts, shapes = {}, []
    with kaldiio.WriteHelper(f"ark,scp:{out}/feats.ark,{out}/feats.scp") as writer:
        for flac in shortest:
            wav, _ = soundfile.read(flac, dtype="float32")
            feats, _ = extractor(wav)
            writer[flac.stem] = feats
            shapes.append(f"{flac.stem} {feats.shape[0]},{feats.shape[1]}\n")
            trans = flac.parent / f"{flac.parent.parent.name}-{flac.parent.name}.trans.txt"
            texts[flac.stem] = dict(line.split(" ", 1) for line in trans.read_text().splitlines())[flac.stem]
    (out / "feats_shape").write_text("".join(shapes))
    (out / "text").write_text("".join(f"{utt} {text}\n" for utt, text in texts.items()))
    chars = sorted(set("".join(texts.values())) - {" "})
    (out / "tokens.txt").write_text("\n".join(["<blank>", "<unk>", "<space>", *chars, "<sos/eos>"]) + "\n")
    frames = np.concatenate(list(kaldiio.load_scp(str(out / "feats.scp")).values()))
    np.savez(out / "cmvn.npz", count=np.array(len(frames)), sum=frames.sum(0), sum_square=(frames**2).sum(0))
    return out


def launch(module: str, args: Sequence[str], log_dir: Path, world_size: int) -> float:
    """Run ``python -m module args`` as ``world_size`` DDP ranks on CPU; the wall time in seconds.

    Rank r's stderr goes to log_dir/rank<r>.log. A rank that fails ends the others, which would
    otherwise wait for it forever in a collective.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    init_file = log_dir / "ddp_init"  # must not exist yet: a fresh rendezvous
    procs: List[subprocess.Popen] = []
    start = time.monotonic()
    for rank in range(world_size):
        dist_args = [] if world_size == 1 else [
            "--ngpu", "0", "--multiprocessing_distributed", "false", "--dist_backend", "gloo",
            "--dist_world_size", str(world_size), "--dist_rank", str(rank),
            "--dist_init_method", f"file://{init_file}"]
        with open(log_dir / f"rank{rank}.log", "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", module, *args, *dist_args],
                                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0)]
            if failed or time.monotonic() - start > DDP_TIMEOUT:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    wall = time.monotonic() - start
    for rank, p in enumerate(procs):
        if p.returncode != 0:
            tail = (log_dir / f"rank{rank}.log").read_text()[-3000:]
            pytest.fail(f"{module} rank {rank}/{world_size} failed (exit {p.returncode}, "
                        f"{wall:.0f} s; limit {DDP_TIMEOUT} s), {log_dir}/rank{rank}.log ends:\n{tail}")
    return wall


def rank0_lines(log: Path, world_size: int) -> List[str]:
    """ESPnet's log lines that rank 0 of a world of world_size tagged as its own ([host:0/N])."""
    return [line for line in log.read_text().splitlines() if re.match(rf"\[[^\]:]+:0/{world_size}\]", line)]


def keys_loaded(lines: Sequence[str]) -> List[int]:
    """How many utterances each dataset that a rank built holds (ESPnet logs it for text files)."""
    return [int(m.group(1)) for line in lines for m in [re.search(r"only loading (\d+) keys", line)] if m]


def asr_args(dump: Path, tmp_path: Path, out: Path) -> List[str]:
    """A tiny BLSTM CTC model through one growth stage (1 layer) and the full model (2 layers).

    Dropout off and plain SGD, so that the 1- and 2-process runs can be compared weight by weight
    (Adam would magnify float rounding in tiny gradients into lr-sized steps).
    """
    conf = yaml.safe_load((ROOT / "conf/asr/blstm_small.yaml").read_text())
    conf["encoder_conf"].update(num_layers=2, hidden_size=16, projection_size=16, subsample=[1, 1], dropout=0.0)
    conf["encoder_pretraining"] = {"layers": [1], "epochs": 1}
    conf.update(max_epoch=1, batch_bins=240000, keep_nbest_models=1, optim="sgd", optim_conf={"lr": 0.01})
    config = tmp_path / "asr_tiny.yaml"
    config.write_text(yaml.safe_dump(conf, sort_keys=False))
    return [
        "--config", str(config), "--output_dir", str(out), "--ngpu", "0", "--use_tensorboard", "false",
        "--train_data_path_and_name_and_type", f"{dump}/feats.scp,speech,kaldi_ark",
        "--train_data_path_and_name_and_type", f"{dump}/text,text,text",
        "--train_shape_file", f"{dump}/feats_shape",
        "--valid_data_path_and_name_and_type", f"{dump}/feats.scp,speech,kaldi_ark",
        "--valid_data_path_and_name_and_type", f"{dump}/text,text,text",
        "--valid_shape_file", f"{dump}/feats_shape",
        "--normalize_conf", f"stats_file={dump}/cmvn.npz",
        "--token_list", f"{dump}/tokens.txt", "--token_type", "char"]


def test_asr_training_with_two_processes_equals_one(dump, tmp_path):
    from espnet_probe.layers import load_asr_model

    single, ddp = tmp_path / "asr_1proc", tmp_path / "asr_2proc"
    wall_1 = launch("espnet_probe.bin.asr_train", asr_args(dump, tmp_path, single), tmp_path / "log_1proc", 1)
    wall_2 = launch("espnet_probe.bin.asr_train", asr_args(dump, tmp_path, ddp), tmp_path / "log_2proc", 2)
    print(f"\ntiny ASR (growth stage + full model, 1 epoch each): 1 process {wall_1:.1f} s, "
          f"2 processes {wall_2:.1f} s")

    # rank 0 ran in a world of 2, through both ESPnet runs, on its share of every mini-batch
    lines = rank0_lines(tmp_path / "log_2proc" / "rank0.log", world_size=2)
    assert sum("The training was finished at 1 epochs" in line for line in lines) == 2
    single_keys = keys_loaded((tmp_path / "log_1proc" / "rank0.log").read_text().splitlines())
    assert single_keys and set(single_keys) == {N_UTTS}
    rank0_keys = keys_loaded(lines)
    assert rank0_keys and all(N_UTTS / 2 <= k < N_UTTS for k in rank0_keys), rank0_keys
    # rank 1 (which logs only errors) started both runs (ESPnet's main prints the process's
    # command line at the start of each), and each finished: rank 0 could not have passed a
    # single training step without it
    rank1 = (tmp_path / "log_2proc" / "rank1.log").read_text()
    assert sum("asr_train" in line and "--dist_rank 1" in line for line in rank1.splitlines()) == 2
    assert "Traceback" not in rank1
    for out in (ddp / "pretrain" / "L1", ddp):
        conf = yaml.safe_load((out / "config.yaml").read_text())
        assert conf["distributed"] is True and conf["dist_world_size"] == 2

    # the checkpoints load, and DDP averaged the gradients exactly: the same weights as 1 process
    for stage in (Path("pretrain") / "L1", Path(".")):
        one = load_asr_model(single / stage / "config.yaml", single / stage / "valid.loss.best.pth")
        two = load_asr_model(ddp / stage / "config.yaml", ddp / stage / "valid.loss.best.pth")
        one_state, two_state = one.state_dict(), two.state_dict()
        assert one_state.keys() == two_state.keys()
        for name in one_state:
            assert torch.allclose(one_state[name], two_state[name], rtol=0, atol=1e-5), (
                f"{stage}: {name} differs by {(one_state[name] - two_state[name]).abs().max():.2e}")


def test_probe_training_with_two_processes(dump, tmp_path):
    from espnet_probe.tasks.probe import ProbeTask

    exp = tmp_path / "probe_2proc"
    feats = f"{dump}/feats.scp,speech,kaldi_ark"
    args = [
        "--config", str(ROOT / "conf/probe/probe_small.yaml"), "--output_dir", str(exp), "--ngpu", "0",
        "--asr_train_config", str(ASR_FIXTURE / "config.yaml"),
        "--asr_model_file", str(ASR_FIXTURE / "valid.loss.best.pth"),
        "--probe_conf", "hidden_size=16", "--max_epoch", "1", "--batch_bins", "240000",
        "--train_data_path_and_name_and_type", feats, "--train_shape_file", f"{dump}/feats_shape",
        "--valid_data_path_and_name_and_type", feats, "--valid_shape_file", f"{dump}/feats_shape"]
    wall = launch("espnet_probe.bin.probe_train", args, tmp_path / "log", 2)
    print(f"\ntiny probe (1 epoch): 2 processes {wall:.1f} s")

    lines = rank0_lines(tmp_path / "log" / "rank0.log", world_size=2)
    results = [line for line in lines if "1epoch results" in line]
    assert len(results) == 1 and any("The training was finished at 1 epochs" in line for line in lines)
    # the stats of both ranks were gathered: every probed layer's L1 is a finite number
    l1 = {name: float(value) for name, value in re.findall(r"l1_(\w+)=([-\d.e+]+)", results[0])}
    assert l1 and all(np.isfinite(v) and v > 0 for v in l1.values()), l1
    rank1 = (tmp_path / "log" / "rank1.log").read_text()
    assert "--dist_rank 1" in rank1 and "Traceback" not in rank1
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    assert conf["distributed"] is True and conf["dist_world_size"] == 2

    model, _ = ProbeTask.build_model_from_file(exp / "config.yaml", exp / "valid.loss.best.pth", "cpu")
    utt, mel = next(iter(kaldiio.load_scp(str(dump / "feats.scp")).items()))
    preds = model.predict(torch.tensor(mel)[None], torch.tensor([len(mel)]))
    assert set(preds) == set(l1) == set(model.layer_names)
    assert all(p.shape == (1, len(mel), 80) and torch.isfinite(p).all() for p in preds.values()), utt
