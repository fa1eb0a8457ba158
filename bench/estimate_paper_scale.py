"""Cost of the paper-scale recipe (LibriSpeech-100, 4 CTC models, probes, vocoding, scoring) per
stage on one GPU, estimated from per-batch costs measured on this CPU.

Method:
1. Every network is built from its config exactly as the recipe builds it (ESPnet's ASRTask for
   conf/asr/{vgg_blstm,blstm}.yaml, ProbeModel on every layer with conf/probe/probe.yaml, the
   ThinResNet-34 of conf/speaker/resnet34.yaml, resemblyzer's GE2E) with untrained weights: the
   cost does not depend on them. One batch (--batch_utts utterances of --time_seconds) goes
   through each network once under torch.utils.flop_counter.FlopCounterMode (convolutions and
   matrix products, forward and backward) and a dispatch mode that adds up the bytes read and
   written by every other op (elementwise, reductions, copies: memory-bound on a GPU). LSTMs are
   counted analytically, since FlopCounterMode sees no FLOPs in the CPU LSTM kernel: per frame,
   direction and layer 4 gates x (input + hidden) x hidden multiply-adds = 2 x 4H(I + H) FLOPs
   forward, backward = 2 x forward. The same batch is then timed (CPU seconds, one thread).
   Every cost is linear in frames, so it is kept per second of audio; optimizer steps (Adam +
   gradient clipping) are measured apart and counted per batch of the config's batch_bins.
2. GPU time = conv FLOPs / (peak x util_conv) + GEMM FLOPs / (peak x util_gemm) + LSTM FLOPs /
   (peak x util_rnn) + bytes / (bandwidth x util_mem), for a V100 (fp32), an A100 in fp32 and an
   A100 with TF32 tensor cores (optimistic: needs torch.backends.{cuda.matmul,cudnn}.allow_tf32).
   CPU-only work (Griffin-Lim, STOI/ESTOI/PESQ, GE2E/ThinResNet embedding, and the decoding
   stages, which the recipe runs on CPU) is given in CPU core-hours from measured CPU seconds.
3. Stage work = epochs x hours x cost per second of audio (+ validation, + optimizer steps),
   and a wall-clock schedule of the recipe's own jobs on 1 GPU and on a cluster.

  tools/venv/bin/python bench/estimate_paper_scale.py [--batch_utts 8] [--utt_seconds 12.7] \\
      [--gpu_tflops 15.7] [--vocode_max_utts 200] [--linearity_check] [--out bench/RESULTS_paper_scale.md]

Needs the default recipe's outputs for the audio measurements (real vocoded wavs and log-mels:
--quality_dir, --ref_wav_scp). Runs in a few minutes on one busy CPU core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # single-threaded measurements, also for numpy's BLAS

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_common import cpu_model  # noqa: E402

FEAT_DIM = 240  # 80 log-mel + delta + accel
COST_FIELDS = ("conv", "gemm", "rnn", "traffic", "cpu", "serial")
CUDNN_RESERVE_FLOATS = 8  # per frame, direction and layer x hidden size: gates, cell, hidden, tanh(cell)


# ----------------------------------------------------------------------------- counting


@dataclasses.dataclass
class Cost:
    """Work of one unit: FLOPs by kind, bytes moved by memory-bound ops, measured CPU seconds, and
    GPU seconds that no GPU speed or extra GPU shortens (sequential LSTM steps)."""

    conv: float = 0.0
    gemm: float = 0.0
    rnn: float = 0.0
    traffic: float = 0.0
    cpu: float = 0.0
    serial: float = 0.0

    @property
    def flops(self) -> float:
        return self.conv + self.gemm + self.rnn

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(getattr(self, f) + getattr(other, f) for f in COST_FIELDS))

    def __mul__(self, k: float) -> "Cost":
        return Cost(*(getattr(self, f) * k for f in COST_FIELDS))

    __rmul__ = __mul__


class MemoryTraffic(TorchDispatchMode):
    """Bytes read + written by every op that is neither a GEMM, a convolution nor an RNN kernel
    (those are compute-bound and counted as FLOPs); views move nothing and are skipped."""

    COMPUTE = ("mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward")

    def __init__(self):
        super().__init__()
        self.bytes = 0.0
        self.saw_rnn = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if "rnn" in name or "lstm" in name:
            self.saw_rnn = True
        elif name not in self.COMPUTE and not func.is_view and name != "_local_scalar_dense":
            self.bytes += sum(t.numel() * t.element_size()
                              for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor))
        return out


class LstmFlops:
    """Analytic FLOPs of every torch.nn.LSTM call inside ``model`` (forward hooks): per frame,
    direction and layer 2 x 4H(I + H); x3 when gradients will flow (backward = 2 x forward).
    Also the sequential recurrent steps, and the activation memory cuDNN would keep for backward
    (CUDNN_RESERVE_FLOATS x H floats per frame, direction and layer; the CPU kernel's own
    workspace is larger and is not counted)."""

    def __init__(self, model: torch.nn.Module):
        self.flops = 0.0
        self.steps = 0.0
        self.reserve_bytes = 0.0
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, torch.nn.LSTM)]

    def _hook(self, module, inputs, _output):
        x = inputs[0]
        if not isinstance(x, torch.Tensor) or module.proj_size:
            raise TypeError(f"{type(module).__name__}: only padded tensors without proj_size are counted")
        batch, steps = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
        dirs = 2 if module.bidirectional else 1
        size, forward = module.input_size, 0.0
        for _ in range(module.num_layers):
            forward += dirs * 2 * 4 * module.hidden_size * (size + module.hidden_size) * batch * steps
            size = module.hidden_size * dirs
        trains = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
        self.flops += forward * (3 if trains else 1)
        # our BiLSTM runs its two directions as two calls; backward-data is sequential too
        self.steps += steps * module.num_layers * (2 if trains else 1)
        if trains:
            self.reserve_bytes += (batch * steps * module.num_layers * dirs
                                   * CUDNN_RESERVE_FLOATS * module.hidden_size * 4)

    def close(self):
        for h in self.handles:
            h.remove()


@dataclasses.dataclass
class Measured:
    cost: Cost            # of the measured call
    rnn_steps: float      # sequential recurrent steps of the call
    saved_bytes: float    # tensors kept for backward (activation memory)


def measure(fn, model: torch.nn.Module | None, repeats: int) -> Measured:
    """Count ``fn()`` once (also the warm-up), then time it: best CPU seconds of ``repeats``."""
    lstm = LstmFlops(model) if model is not None else None
    params = {p.data_ptr() for p in model.parameters()} if model is not None else set()
    saved: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and t.dtype != torch.uint8:  # uint8: the CPU LSTM's workspace
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    try:
        with FlopCounterMode(display=False) as flops, MemoryTraffic() as traffic, \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
    finally:
        if lstm is not None:
            lstm.close()
    if lstm is not None and lstm.flops and not traffic.saw_rnn:
        raise RuntimeError("LSTMs ran as plain matrix products here (no RNN kernel): FlopCounterMode "
                           "counted them already, and the analytic count would double them")
    by_op = flops.get_flop_counts().get("Global", {})
    conv = float(sum(v for op, v in by_op.items() if "convolution" in str(op)))
    gemm = float(flops.get_total_flops()) - conv
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return Measured(Cost(conv, gemm, lstm.flops if lstm else 0.0, traffic.bytes, best),
                    lstm.steps if lstm else 0.0,
                    float(sum(saved.values())) + (lstm.reserve_bytes if lstm else 0.0))


# ----------------------------------------------------------------------------- the networks


def build_asr(config: Path, tmp: Path, n_tokens: int, overrides=()) -> torch.nn.Module:
    """An ESPnet ASR model from one of our configs, built as asr_train builds it."""
    from espnet2.tasks.asr import ASRTask

    from espnet_probe.asr.pretraining import espnet_config
    from espnet_probe.asr.register import register_encoders

    register_encoders()
    stats = tmp / "stats.npz"
    np.savez(stats, count=np.array(10), sum=np.zeros(FEAT_DIM), sum_square=np.full(FEAT_DIM, 10.0))
    tokens = tmp / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\n" + "".join(f"t{i}\n" for i in range(n_tokens - 3)) + "<sos/eos>\n")
    args = ASRTask.get_parser().parse_args(
        ["--config", str(espnet_config(config, tmp / f"{config.stem}.yaml")), "--token_list", str(tokens),
         "--normalize_conf", f"stats_file={stats}", "--output_dir", str(tmp), *overrides])
    torch.manual_seed(0)
    return ASRTask.build_model(args)


def optimizer_step(params, grad_clip: float = 5.0):
    """ESPnet's per-batch work after backward: gradient clipping and an Adam step."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
    return step


def feature_batch(n_utts: int, seconds: float, frame_rate: int, tokens_per_second: float, n_tokens: int):
    frames = int(round(seconds * frame_rate))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_utts, frames, FEAT_DIM, generator=g)
    lengths = torch.full((n_utts,), frames)
    n_text = max(1, int(seconds * tokens_per_second))
    text = torch.randint(1, n_tokens - 1, (n_utts, n_text), generator=g)
    return x, lengths, text, torch.full((n_utts,), n_text)


def asr_calls(model, batch):
    """(training step, forward-only pass) of an ASR model on one batch."""
    x, lengths, text, text_lengths = batch

    def train():
        model.train()
        model.zero_grad(set_to_none=True)
        model(x.clone(), lengths, text, text_lengths)[0].backward()  # clone: global_mvn is in place

    def forward():
        model.eval()
        with torch.no_grad():
            model(x.clone(), lengths, text, text_lengths)

    return train, forward


def measure_asr(model, batch, repeats) -> dict:
    train, forward = asr_calls(model, batch)
    return {"train": measure(train, model, repeats), "forward": measure(forward, model, repeats),
            "step": measure(optimizer_step(model.parameters()), None, repeats),
            "params": sum(p.numel() for p in model.parameters())}


def measure_probe(asr, probe_conf: dict, batch, repeats) -> dict:
    from espnet_probe.probe.model import ProbeModel, probed_layers

    x, lengths, _, _ = batch
    layers = probed_layers(asr)
    torch.manual_seed(0)
    model = ProbeModel(asr, layers, **probe_conf)

    def train():
        model.train()
        model.zero_grad(set_to_none=True)
        model(speech=x.clone(), speech_lengths=lengths)[0].backward()

    def forward():
        model.eval()
        with torch.no_grad():
            model.predict(x.clone(), lengths)

    return {"train": measure(train, model, repeats), "forward": measure(forward, model, repeats),
            "step": measure(optimizer_step(model.probes.parameters()), None, repeats),
            "layers": layers, "params": sum(p.numel() for p in model.probes.parameters())}


def measure_resnet(conf: dict, n_spk: int, crops: int, wav_lists, repeats) -> dict:
    from espnet_probe.speaker.resnet import SpeakerEmbeddingModel, build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(conf.get("frontend_conf"), conf.get("encoder_conf"))
    model = SpeakerEmbeddingModel(encoder, n_spk, **(conf.get("loss_conf") or {}))
    samples = int(conf.get("crop_seconds", 2.0) * 16000)
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(crops, samples, generator=g)
    labels = torch.randint(0, n_spk, (crops, 1), generator=g)

    def train():
        model.train()
        model.zero_grad(set_to_none=True)
        model(wav, torch.full((crops,), samples), labels)[0].backward()

    def embed():
        encoder.eval()
        with torch.no_grad():
            for w in wav_lists:
                encoder.embed(torch.from_numpy(w)[None], torch.tensor([w.size]))

    return {"train": measure(train, model, repeats), "embed": measure(embed, encoder, repeats),
            "step": measure(optimizer_step(model.parameters()), None, repeats),
            "crop_seconds": samples / 16000, "params": sum(p.numel() for p in model.parameters())}


def measure_ge2e(wavs, repeats) -> Measured:
    from espnet_probe.speaker.ge2e import GE2EEncoder

    encoder = GE2EEncoder()
    return measure(lambda: encoder.embed(wavs), encoder.model, repeats)


def measure_audio(args, repeats) -> dict:
    """Griffin-Lim and STOI/ESTOI/PESQ on real vocoded audio of the default recipe (per layer)."""
    import kaldiio

    from espnet_probe.audio.features import FbankConfig
    from espnet_probe.audio.io import load_audio
    from espnet_probe.audio.vocoder import VocoderConfig, vocode
    from espnet_probe.metrics.quality import score_pair
    from espnet_probe.utils.kaldi_dir import read_table

    refs = read_table(args.ref_wav_scp)
    fbank = FbankConfig.from_yaml(ROOT / "conf/fbank.yaml")
    vocoder_cfg = VocoderConfig.from_yaml(ROOT / "conf/vocoder.yaml")
    out = {}
    for layer in args.quality_layers:
        wav_scp = args.quality_dir / layer / "wav.scp"
        mel_scp = args.quality_dir / layer / "mel.scp"
        for path in (wav_scp, mel_scp):
            if not path.is_file():
                raise SystemExit(f"estimate_paper_scale: {path} not found: run the default recipe through "
                                 "stage 9 (./run.sh --stop_stage 9) or point --quality_dir elsewhere")
        wavs = read_table(wav_scp)
        mels = read_table(mel_scp)
        utts = sorted(wavs)[: args.quality_utts]
        missing = [u for u in utts if u not in refs or u not in mels]
        if missing:
            raise SystemExit(f"estimate_paper_scale: {missing[0]} of {wav_scp} is missing from "
                             f"{args.ref_wav_scp} or {mel_scp}")
        est = [load_audio(u, wavs[u]) for u in utts]
        ref = [load_audio(u, refs[u]) for u in utts]
        log_mels = [np.asarray(kaldiio.load_mat(mels[u])) for u in utts]
        seconds = sum(w.size for w in est) / 16000

        def quality():
            for u, r, e in zip(utts, ref, est):
                score_pair(u, r, e)

        def griffin_lim():
            for m, r in zip(log_mels, ref):  # one at a time with one thread, as vocode_layers does
                vocode([m], [r.size], fbank, vocoder_cfg)

        out[layer] = {"seconds": seconds, "wavs": est,
                      "quality": measure(quality, None, repeats).cost.cpu / seconds,
                      "griffin_lim": measure(griffin_lim, None, repeats).cost.cpu / seconds}
    return out


def blas_gflops(repeats) -> float:
    """numpy float64 GEMM speed on one thread: sklearn's logistic regression runs on it."""
    a = np.random.default_rng(0).standard_normal((2000, 1000))
    b = np.random.default_rng(1).standard_normal((1000, 256))
    best = math.inf
    for _ in range(max(3, repeats)):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2 * 2000 * 1000 * 256 / best / 1e9


# ----------------------------------------------------------------------------- GPU model


@dataclasses.dataclass(frozen=True)
class Gpu:
    name: str
    conv: float      # sustained FLOP/s per kind
    gemm: float
    rnn: float
    memory: float    # sustained bytes/s

    def seconds(self, c: Cost) -> float:
        return c.conv / self.conv + c.gemm / self.gemm + c.rnn / self.rnn + c.traffic / self.memory + c.serial


def gpus(args) -> list[Gpu]:
    t = 1e12
    return [
        Gpu(f"V100 fp32 {args.gpu_tflops:g}", args.gpu_tflops * t * args.util_conv, args.gpu_tflops * t * args.util_gemm,
            args.gpu_tflops * t * args.util_rnn, args.gpu_bandwidth * 1e9 * args.util_mem),
        Gpu(f"A100 fp32 {args.a100_tflops:g}", args.a100_tflops * t * args.util_conv, args.a100_tflops * t * args.util_gemm,
            args.a100_tflops * t * args.util_rnn, args.a100_bandwidth * 1e9 * args.util_mem),
        Gpu(f"A100 TF32 {args.a100_tf32_tflops:g}", args.a100_tf32_tflops * t * args.util_tf32_dense,
            args.a100_tf32_tflops * t * args.util_tf32_dense, args.a100_tf32_tflops * t * args.util_tf32_rnn,
            args.a100_bandwidth * 1e9 * args.util_mem),
    ]


# ----------------------------------------------------------------------------- stages


@dataclasses.dataclass
class Stage:
    name: str
    work: str
    spread: str
    gpu_jobs: list = dataclasses.field(default_factory=list)   # Cost per job, on GPU in the recipe
    gpu_labels: list = dataclasses.field(default_factory=list)
    cpu_jobs: list = dataclasses.field(default_factory=list)   # CPU seconds per single-threaded job
    gpu_able: list = dataclasses.field(default_factory=list)   # Cost of CPU-run network work (if moved)
    divisible: bool = False                                    # cpu work splits over any number of jobs
    flops: float = 0.0


def lpt_wall(jobs: list[float], slots: int) -> float:
    """Longest-processing-time-first schedule of independent jobs on ``slots`` workers."""
    loads = [0.0] * max(1, slots)
    for j in sorted(jobs, reverse=True):
        loads[loads.index(min(loads))] += j
    return max(loads) if jobs else 0.0


def gpu_wall(gpu: Gpu, jobs: list[Cost], n_gpus: int, ddp_eff: float) -> tuple[float, str]:
    """Hours with the best recipe setting (--asr_parallel P jobs at once, --ngpu g each,
    P x g <= n_gpus). DDP splits every batch over g GPUs: the FLOP part shrinks by
    g x ddp_eff^log2(g), the sequential LSTM steps of each batch do not."""
    if not jobs:
        return 0.0, ""
    best = (math.inf, "")
    for g in range(1, n_gpus + 1):
        p = min(len(jobs), n_gpus // g)
        speed = g * ddp_eff ** math.log2(g)
        wall = lpt_wall([((gpu.seconds(c) - c.serial) / speed + c.serial) / 3600 for c in jobs], p)
        if wall < best[0] - 1e-9:
            best = (wall, f"{p} x --ngpu {g}")
    return best


def rel(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def fmt(x: float, digits: int = 3) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def flops_str(x: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOP"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--batch_utts", type=int, default=8, help="utterances of the measured batch and of the per-batch figures")
    a("--utt_seconds", type=float, default=12.7, help="utterance length of the per-batch figures (train-clean-100 mean)")
    a("--time_seconds", type=float, default=2.0,
      help="length of each measured utterance (costs are linear in frames; short keeps the run quick)")
    a("--frame_rate", type=int, default=100)
    a("--tokens_per_second", type=float, default=5.0, help="BPE tokens per second of speech (CTC targets)")
    a("--n_tokens", type=int, default=300, help="BPE vocabulary (the configs suggest ~300)")
    a("--asr_configs", type=Path, nargs="+", default=[ROOT / "conf/asr/vgg_blstm.yaml", ROOT / "conf/asr/blstm.yaml"])
    a("--probe_config", type=Path, default=ROOT / "conf/probe/probe.yaml")
    a("--speaker_config", type=Path, default=ROOT / "conf/speaker/resnet34.yaml")
    a("--resnet_crops", type=int, default=8, help="crops of the measured ThinResNet training batch")
    # the data (LibriSpeech)
    a("--train_hours", type=float, default=100.6)
    a("--train_utts", type=int, default=28539)
    a("--train_speakers", type=int, default=251)
    a("--dev_hours", type=float, default=5.4)
    a("--test_hours", type=float, default=5.4)
    a("--test_utts", type=int, default=2620)
    a("--snrs", type=int, default=3, help="noisy test conditions besides clean")
    a("--vocode_max_utts", type=int, default=200, help="vocoded (and scored) utterances per condition; 0 = all")
    a("--asr_epochs", type=int, help="default: max_epoch of each ASR config (early stopping may end sooner)")
    a("--probe_epochs", type=int, help="default: the probe config's max_epoch")
    a("--speaker_epochs", type=int, help="default: the speaker config's max_epoch")
    a("--speaker_valid_fraction", type=float, default=0.1)
    a("--sid_held_out", type=float, default=0.25)
    a("--lr_iters", type=int, default=200, help="assumed L-BFGS iterations per speaker-ID logistic regression")
    a("--feature_xrt", type=float, default=150.0, help="feature extraction, x real time per core (BENCHMARKS.md)")
    # the GPUs
    a("--gpu_tflops", type=float, default=15.7, help="V100 fp32 peak")
    a("--gpu_bandwidth", type=float, default=900.0, help="V100 HBM2 GB/s")
    a("--a100_tflops", type=float, default=19.5)
    a("--a100_tf32_tflops", type=float, default=156.0)
    a("--a100_bandwidth", type=float, default=1555.0)
    a("--util_rnn", type=float, default=0.35, help="sustained fraction of peak, cuDNN LSTM at H=1024")
    a("--util_conv", type=float, default=0.50)
    a("--util_gemm", type=float, default=0.60, help="large Linear layers (probes, projections)")
    a("--util_mem", type=float, default=0.70, help="fraction of HBM bandwidth for elementwise ops")
    a("--util_tf32_dense", type=float, default=0.25, help="A100 TF32: conv and GEMM, fraction of 156")
    a("--util_tf32_rnn", type=float, default=0.10, help="A100 TF32: LSTM, fraction of 156")
    a("--rnn_step_us", type=float, default=10.0, help="GPU latency floor per sequential LSTM step")
    a("--ddp_efficiency", type=float, default=0.9, help="per-GPU efficiency of DDP with 2+ GPUs")
    a("--small_cores", type=int, default=8, help="CPU cores beside the single GPU")
    a("--cluster_gpus", type=int, default=8)
    a("--cluster_cores", type=int, default=32)
    # the audio measurements
    a("--quality_dir", type=Path, default=ROOT / "exp/probe_vgg_blstm_small_baseline/decode_test")
    a("--quality_layers", nargs="+", default=["cnn1", "blstm5"], help="a shallow and a deep layer")
    a("--quality_utts", type=int, default=4)
    a("--ref_wav_scp", type=Path, default=ROOT / "data/test/wav.scp")
    a("--repeats", type=int, default=1)
    a("--linearity_check", action="store_true",
      help="also measure the first ASR model's training step on full --utt_seconds utterances (~1 min)")
    a("--out", type=Path, default=ROOT / "bench/RESULTS_paper_scale.md")
    return p.parse_args(argv)


def measure_all(args: argparse.Namespace, log) -> SimpleNamespace:
    """Every network, vocoder and metric of the recipe measured on one batch (Method 1-3, 5)."""
    from espnet_probe.asr.pretraining import parse_schedule

    linearity = None
    # ---- measurements
    measured_seconds = args.batch_utts * args.time_seconds
    batch = feature_batch(args.batch_utts, args.time_seconds, args.frame_rate, args.tokens_per_second, args.n_tokens)
    probe_yaml = yaml.safe_load(args.probe_config.read_text())
    probe_conf = dict(probe_yaml.get("probe_conf") or {})
    asr, probe, growth = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.asr_configs:
            conf = yaml.safe_load(config.read_text())
            name = config.stem
            log(f"{name}: ASR training step, forward, optimizer step")
            model = build_asr(config, Path(tmp), args.n_tokens)
            asr[name] = {"conf": conf, **measure_asr(model, batch, args.repeats)}
            schedule = parse_schedule(conf, str(config))
            growth[name] = []
            for n, epochs in (zip(schedule.layers, schedule.epochs) if schedule else []):  # growth stages
                sub = (conf.get("encoder_conf") or {}).get("subsample")
                over = ["--encoder_conf", f"num_layers={n}"] + (
                    ["--encoder_conf", f"subsample={sub[:n]}"] if isinstance(sub, list) else [])
                small = build_asr(config, Path(tmp), args.n_tokens, over)
                growth[name].append((n, epochs, measure_asr(small, batch, 1)))
            if args.linearity_check and not probe:
                log(f"{name}: linearity check, {args.batch_utts} x {args.utt_seconds:g} s")
                full = feature_batch(args.batch_utts, args.utt_seconds, args.frame_rate, args.tokens_per_second,
                                     args.n_tokens)
                linearity = (name, measure(asr_calls(model, full)[0], model, 1))
            log(f"{name}: probes on every layer ({probe_conf})")
            probe[name] = measure_probe(model, probe_conf, batch, args.repeats)
            del model
    log("audio: Griffin-Lim and STOI/ESTOI/PESQ on vocoded wavs")
    audio = measure_audio(args, args.repeats)
    all_wavs = [w for layer in audio.values() for w in layer["wavs"]]
    wav_seconds = sum(w.size for w in all_wavs) / 16000
    log("speaker encoders: ThinResNet-34 training step and embedding, GE2E embedding")
    speaker_conf = yaml.safe_load(args.speaker_config.read_text())
    resnet = measure_resnet(speaker_conf, args.train_speakers, args.resnet_crops, all_wavs, args.repeats)
    ge2e = measure_ge2e(all_wavs, args.repeats)
    blas = blas_gflops(args.repeats)
    load_after = os.getloadavg()[0]
    log("estimating")
    return SimpleNamespace(measured_seconds=measured_seconds, batch=batch, probe_yaml=probe_yaml, probe_conf=probe_conf, asr=asr, probe=probe, growth=growth, linearity=linearity, audio=audio, all_wavs=all_wavs, wav_seconds=wav_seconds, speaker_conf=speaker_conf, resnet=resnet, ge2e=ge2e, blas=blas, load_after=load_after)


def estimate_stages(args: argparse.Namespace, meas: SimpleNamespace) -> SimpleNamespace:
    """The cost of every stage from the measured per-unit costs."""
    measured_seconds, probe_yaml, asr, probe = meas.measured_seconds, meas.probe_yaml, meas.asr, meas.probe
    growth, audio, speaker_conf, resnet = meas.growth, meas.audio, meas.speaker_conf, meas.resnet
    ge2e, blas, wav_seconds = meas.ge2e, meas.blas, meas.wav_seconds
    # ---- per-unit costs
    per_s = lambda m: m.cost * (1.0 / measured_seconds)  # noqa: E731  per second of audio
    h = 3600.0
    gpu_list = gpus(args)
    v100 = gpu_list[0]
    test_mean = args.test_hours * h / args.test_utts
    conditions = 1 + args.snrs
    voc_utts = args.test_utts if args.vocode_max_utts <= 0 else min(args.vocode_max_utts, args.test_utts)
    names = list(asr)
    n_layers = {n: len(probe[n]["layers"]) for n in names}

    def latency(m: Measured) -> Cost:
        """GPU floor of one training batch: its sequential LSTM steps x --rnn_step_us."""
        return Cost(serial=m.rnn_steps / args.time_seconds * args.utt_seconds * args.rnn_step_us * 1e-6)

    def asr_batches(conf, hours):
        return math.ceil(hours * h * args.frame_rate / (conf["batch_bins"] / FEAT_DIM))

    stages: list[Stage] = []
    # every set once, plus the clean log-mel target of every noisy set
    feat_hours = (3 * args.train_hours + args.dev_hours + (conditions + args.snrs) * args.test_hours)
    stages.append(Stage("3 features", f"log-mel of ~{feat_hours:.0f} h (train, noisy copy, dev, test x "
                        f"{conditions}, clean targets of the noisy sets) at {args.feature_xrt:g}x real time per core",
                        "--nj jobs over CPU cores (${train_cmd})",
                        cpu_jobs=[feat_hours * h / args.feature_xrt], divisible=True))

    # stage 5: ASR training
    jobs, labels, work = [], [], []
    for n in names:
        conf = asr[n]["conf"]
        epochs = args.asr_epochs or conf["max_epoch"]
        for training, hours in (("baseline", args.train_hours), ("robust", 2 * args.train_hours)):
            run = lambda m, e: e * (hours * h * per_s(m["train"]) + args.dev_hours * h * per_s(m["forward"])  # noqa: E731
                                    + asr_batches(conf, hours) * (m["step"].cost + latency(m["train"])))
            cost = run(asr[n], epochs)
            for _layers, g_epochs, m in growth[n]:
                cost = cost + run(m, g_epochs)
            jobs.append(cost)
            labels.append(f"ASR {n} {training}")
        grown = " + growth " + ", ".join(f"{k} layers x {e} ep" for k, e, _ in growth[n]) if growth[n] else ""
        work.append(f"{n}: {epochs} ep{grown} x ({args.train_hours:g} h or {2 * args.train_hours:g} h robust) "
                    f"+ dev {args.dev_hours:g} h/ep, {asr_batches(conf, args.train_hours)} or "
                    f"{asr_batches(conf, 2 * args.train_hours)} batches/ep")
    stages.append(Stage("5 ASR training", "; ".join(work),
                        "4 independent ${cuda_cmd} jobs (--asr_parallel at once, robust first), "
                        "each DDP over --ngpu N", gpu_jobs=jobs, gpu_labels=labels))

    # stage 6: ASR decoding (CPU in the recipe)
    decode = [conditions * args.test_hours * h * per_s(asr[n]["forward"]) for n in names for _ in range(2)]
    stages.append(Stage("6 ASR decode", f"4 models x {conditions} conditions x {args.test_hours:g} h, forward",
                        "1 ${decode_cmd} job per model (CPU, 1 thread), --nj at once",
                        cpu_jobs=[c.cpu for c in decode], gpu_able=decode))

    # stage 7: probe training on clean + noisy
    probe_epochs = args.probe_epochs or probe_yaml["max_epoch"]
    probe_batches = math.ceil(2 * args.train_hours * h * args.frame_rate / (probe_yaml["batch_bins"] / FEAT_DIM))
    jobs, labels = [], []
    for n in names:
        one = probe_epochs * (2 * args.train_hours * h * per_s(probe[n]["train"])
                              + args.dev_hours * h * per_s(probe[n]["forward"])
                              + probe_batches * (probe[n]["step"].cost + latency(probe[n]["train"])))
        jobs += [one] * 3
        labels += [f"probes {n} {t}" for t in ("baseline", "robust", "random")]
    stages.append(Stage("7 probe training", f"6 exps (4 models + 2 random encoders) x {probe_epochs} ep x "
                        f"{2 * args.train_hours:g} h (clean + noisy) + dev/ep; all layers in one pass "
                        f"({', '.join(f'{n}: {n_layers[n]}' for n in names)} layers), {probe_batches} batches/ep",
                        "6 ${cuda_cmd} jobs (--asr_parallel at once), each DDP over --ngpu N", gpu_jobs=jobs,
                        gpu_labels=labels))

    # stage 8: probe decoding (CPU): trained models every condition, controls clean only
    jobs = []
    for n in names:
        jobs += [conditions * args.test_hours * h * per_s(probe[n]["forward"])] * 2
        jobs.append(args.test_hours * h * per_s(probe[n]["forward"]))
    mel_bytes = sum((2 * conditions + 1) * n_layers[n] for n in names) * args.test_hours * h * args.frame_rate * 80 * 4
    stages.append(Stage("8 probe decode", f"(4 x {conditions} + 2 controls x 1) x {args.test_hours:g} h, "
                        f"encoder + every probe, forward; writes {mel_bytes / 1e9:,.0f} GB of mel ark",
                        "1 ${decode_cmd} job per experiment (7, CPU, 1 thread)",
                        cpu_jobs=[c.cpu for c in jobs], gpu_able=jobs))

    # stage 9: Griffin-Lim of every layer x condition for the chosen utterances
    gl_per_s = float(np.mean([a_["griffin_lim"] for a_ in audio.values()]))
    q_per_s = float(np.mean([a_["quality"] for a_ in audio.values()]))

    def vocoded_wavs(utts):
        per_exp = [n_layers[n] * conditions * utts for n in names for _ in range(2)]
        per_exp += [n_layers[n] * utts for n in names] + [conditions * utts]  # controls, oracle
        return per_exp

    voc = vocoded_wavs(voc_utts)
    stages.append(Stage("9 vocode", f"{sum(voc):,} wavs ({voc_utts} utts/condition, mean {test_mean:.1f} s) = "
                        f"{sum(voc) * test_mean / h:,.0f} h of audio, Griffin-Lim 32 it.",
                        "1 ${train_cmd} job per experiment (7, CPU)",
                        cpu_jobs=[w * test_mean * gl_per_s for w in voc]))

    # stage 10: ThinResNet training (GPU) beside the speaker-ID probes (CPU)
    sp_epochs = args.speaker_epochs or speaker_conf["max_epoch"]
    sp_train_utts = round(args.train_utts * (1 - args.speaker_valid_fraction))
    sp_valid_utts = args.train_utts - sp_train_utts
    crops = args.resnet_crops
    sp_steps = math.ceil(sp_train_utts / speaker_conf["batch_size"])
    sp_cost = sp_epochs * (resnet["train"].cost * (sp_train_utts / crops)
                           + resnet["train"].cost * (sp_valid_utts / crops / 3)  # forward only ~ 1/3
                           + resnet["step"].cost * sp_steps)
    sid_jobs, sid_gpu = [], []
    n_probe_train = args.train_utts * (1 - args.sid_held_out)
    for n in names:
        dims = [2 * layer.dim for layer in probe[n]["layers"]]  # mean + std pooling
        lr_flops = args.lr_iters * 4 * n_probe_train * sum(dims) * args.train_speakers
        forward = args.train_hours * h * per_s(asr[n]["forward"])
        for _ in range(3):
            sid_jobs.append(forward.cpu + lr_flops / (blas * 1e9))
            sid_gpu.append(forward)
    stages.append(Stage("10 speaker", f"ThinResNet-34: {sp_epochs} ep x {sp_train_utts:,} crops of "
                        f"{resnet['crop_seconds']:g} s ({sp_steps} steps/ep) [GPU]; speaker-ID probes: 6 encoders x "
                        f"{args.train_hours:g} h forward + logistic regressions ({args.lr_iters} L-BFGS it. assumed) [CPU]",
                        "speaker_train: 1 ${cuda_cmd} job (--ngpu N); speaker-ID: 6 ${train_cmd} CPU jobs beside it",
                        gpu_jobs=[sp_cost], gpu_labels=["ThinResNet-34"], cpu_jobs=sid_jobs, gpu_able=sid_gpu))

    # stage 11: scoring every vocoded wav (+ the unprocessed audio of each condition)
    ge2e_per_s = ge2e.cost.cpu / wav_seconds
    resnet_per_s = resnet["embed"].cost.cpu / wav_seconds
    score_per_s = q_per_s + ge2e_per_s + resnet_per_s

    def score_jobs(utts):
        return [w * test_mean * score_per_s for w in vocoded_wavs(utts) + [conditions * utts]]

    scored = sum(vocoded_wavs(voc_utts)) + conditions * voc_utts
    stages.append(Stage("11 score", f"{scored:,} wavs x (STOI+ESTOI+PESQ {q_per_s * 1e3:.0f} + GE2E "
                        f"{ge2e_per_s * 1e3:.0f} + ThinResNet {resnet_per_s * 1e3:.0f} ms CPU per audio s)",
                        "1 ${decode_cmd} process per experiment (8; run.sh passes no --nj to score_layers)",
                        cpu_jobs=score_jobs(voc_utts)))

    for s in stages:
        s.flops = sum(c.flops for c in s.gpu_jobs + s.gpu_able)

    return SimpleNamespace(stages=stages, h=h, gpu_list=gpu_list, v100=v100, test_mean=test_mean, conditions=conditions, voc_utts=voc_utts, names=names, n_layers=n_layers, per_s=per_s, gl_per_s=gl_per_s, vocoded_wavs=vocoded_wavs, score_jobs=score_jobs, n_probe_train=n_probe_train, crops=crops)


def method_lines(args: argparse.Namespace, meas: SimpleNamespace, est: SimpleNamespace,
                 started: float, load_before: float) -> list[str]:
    """Header and method: what was measured and how it is turned into hours."""
    probe_conf, blas, load_after = meas.probe_conf, meas.blas, meas.load_after
    test_mean, conditions, voc_utts, n_probe_train = est.test_mean, est.conditions, est.voc_utts, est.n_probe_train
    lines = []
    out = lines.append
    # ---- report
    out("# Paper-scale cost estimate, per stage, on one GPU\n")
    out(f"Command (repo root): `tools/venv/bin/python bench/estimate_paper_scale.py {shlex.join(sys.argv[1:])}`".rstrip()
        + "\n")
    out(f"Date: {datetime.datetime.now():%Y-%m-%d %H:%M}. Machine: {platform.machine()}, {cpu_model()}, "
        f"{os.cpu_count()} cores, no GPU; torch {torch.__version__}, 1 thread. Load average "
        f"{load_before:.1f} / {load_after:.1f} (before / after) on {os.cpu_count()} cores: the machine was shared, so "
        f"CPU figures are pessimistic. Run time {time.time() - started:.0f} s.\n")
    out("## Method\n")
    out(f"1. Each network is built from its config as the recipe builds it (ESPnet `ASRTask.build_model` for "
        f"{', '.join(f'`{rel(c)}`' for c in args.asr_configs)}; `ProbeModel` on every layer with "
        f"`{rel(args.probe_config)}` ({probe_conf}); ThinResNet-34 + GhostVLAD of "
        f"`{rel(args.speaker_config)}`; resemblyzer's GE2E), untrained (cost does not depend on weights). "
        f"One batch of {args.batch_utts} utterances x {args.time_seconds:g} s ({args.frame_rate} frames/s, 240-dim "
        f"features, {args.tokens_per_second:g} BPE tokens/s, {args.n_tokens} tokens) runs once under "
        "`torch.utils.flop_counter.FlopCounterMode` (conv and matrix products, forward and backward) and a dispatch "
        "mode that adds up the bytes read + written by every other non-view op (elementwise, reductions, copies, "
        "gathers: memory-bound on a GPU); then the same call is timed (CPU seconds, 1 thread).")
    out("2. LSTMs: FlopCounterMode sees no FLOPs in the CPU LSTM kernel (checked: the script stops if LSTMs ever "
        "decompose into counted matmuls), so they are counted analytically from forward hooks: per frame, "
        "direction and layer, 4 gates x (input + hidden) x hidden multiply-adds = 2 x 4H(I+H) FLOPs forward, "
        "backward = 2 x forward. Gate nonlinearities are ignored (inside the cuDNN kernel).")
    out("3. All of this is linear in frames, so it is kept per second of audio; the measured utterances are short "
        f"({args.time_seconds:g} s) only to keep the run quick. Per-batch work (gradient clipping + Adam on every "
        "trainable parameter) is measured apart and counted per batch of the config's `batch_bins`. "
        "Validation passes on dev are forward-only.")
    out(f"4. GPU time = conv FLOPs / (peak x {args.util_conv:g}) + GEMM FLOPs / (peak x {args.util_gemm:g}) + LSTM "
        f"FLOPs / (peak x {args.util_rnn:g}) + bytes / (bandwidth x {args.util_mem:g}). V100: {args.gpu_tflops:g} "
        f"TFLOP/s fp32, {args.gpu_bandwidth:g} GB/s; A100: {args.a100_tflops:g} TFLOP/s fp32, {args.a100_bandwidth:g} "
        f"GB/s; A100 TF32 (optimistic, needs `torch.backends.cuda.matmul.allow_tf32` / `cudnn.allow_tf32`): "
        f"{args.a100_tf32_tflops:g} TFLOP/s at {args.util_tf32_dense:g} for conv/GEMM and {args.util_tf32_rnn:g} "
        "for LSTMs. Data loading, kernel launches and Python overhead are not modelled (see the latency check).")
    out("5. CPU-bound parts in CPU core-hours from measured CPU seconds: Griffin-Lim (`espnet_probe.audio.vocoder."
        "vocode`, conf/vocoder.yaml, one utterance at a time) and STOI+ESTOI+PESQ (`metrics.quality.score_pair`) on "
        f"real vocoded wavs of the default run ({args.quality_utts} utts of each of layers "
        f"{', '.join(args.quality_layers)} in `{rel(args.quality_dir)}`: "
        "a near-clean and a degraded layer, averaged), GE2E and ThinResNet embedding of the same wavs. The recipe "
        "also runs ASR decoding (6), probe decoding (8) and the speaker-ID probes (10) on CPU: their CPU core-hours "
        "use the measured CPU forward speed; the GPU columns show them in brackets as if moved to a GPU. "
        f"Speaker-ID logistic regressions: {args.lr_iters} L-BFGS iterations x 4 N D C FLOPs per layer "
        f"(N = {n_probe_train:,.0f} utts, D = 2 x layer size, C = {args.train_speakers}) at the measured numpy "
        f"GEMM speed ({blas:.1f} GFLOP/s); this iteration count is a guess.")
    out(f"6. Data: train-clean-100 {args.train_hours:g} h / {args.train_utts:,} utts / {args.train_speakers} "
        f"speakers (robust = + a noisy copy = {2 * args.train_hours:g} h; probes train on clean + noisy), dev-clean "
        f"{args.dev_hours:g} h, test-clean {args.test_hours:g} h / {args.test_utts:,} utts (mean {test_mean:.1f} s) "
        f"x {conditions} conditions. Vocoding and scoring: --vocode_max_utts {voc_utts} per condition (run.sh's "
        "default is 24); random-encoder controls on clean only (run.sh's default). Epochs: each config's "
        "max_epoch (an upper bound: the ASR "
        "configs stop early after 6 epochs without a better valid loss).\n")

    return lines


def unit_cost_lines(args: argparse.Namespace, meas: SimpleNamespace, est: SimpleNamespace) -> list[str]:
    """The measured per-unit costs and the latency check."""
    measured_seconds, probe_yaml, asr, probe = meas.measured_seconds, meas.probe_yaml, meas.asr, meas.probe
    audio, speaker_conf, resnet, ge2e = meas.audio, meas.speaker_conf, meas.resnet, meas.ge2e
    linearity, wav_seconds = meas.linearity, meas.wav_seconds
    v100, names, n_layers, per_s = est.v100, est.names, est.n_layers, est.per_s
    crops = est.crops
    lines = []
    out = lines.append
    out("## Measured per-unit costs\n")
    out(f"Per batch = {args.batch_utts} utts x {args.utt_seconds:g} s ({args.batch_utts * args.utt_seconds:.0f} s of "
        "audio); CPU s of that batch scaled from the measured one. Activation memory = tensors saved for backward, "
        "per batch of the config's batch_bins.\n")
    out("| unit | GFLOP per audio s (conv / GEMM / LSTM) | memory-bound GB per audio s | CPU GFLOP/s measured | "
        f"GFLOP per batch | CPU s per batch | V100 s per batch | activations per config batch |")
    out("|---|---|---:|---:|---:|---:|---:|---:|")
    ref_batch = args.batch_utts * args.utt_seconds

    def unit_row(label, m: Measured, seconds, config_batch_seconds=None):
        c = m.cost * (1.0 / seconds)
        act = f"{m.saved_bytes / seconds * config_batch_seconds / 1e9:.1f} GB" if config_batch_seconds else "-"
        out(f"| {label} | {c.flops / 1e9:.2f} ({c.conv / 1e9:.2f} / {c.gemm / 1e9:.2f} / {c.rnn / 1e9:.2f}) | "
            f"{c.traffic / 1e9:.3f} | {m.cost.flops / m.cost.cpu / 1e9:.1f} | {c.flops * ref_batch / 1e9:,.0f} | "
            f"{c.cpu * ref_batch:.1f} | {v100.seconds(c * ref_batch):.3f} | {act} |")

    for n in names:
        batch_s = asr[n]["conf"]["batch_bins"] / FEAT_DIM / args.frame_rate
        unit_row(f"{n} ASR train step ({asr[n]['params'] / 1e6:.1f}M params)", asr[n]["train"], measured_seconds, batch_s)
        unit_row(f"{n} ASR forward", asr[n]["forward"], measured_seconds)
        pb = probe_yaml["batch_bins"] / FEAT_DIM / args.frame_rate
        unit_row(f"{n} probes, {n_layers[n]} layers ({probe[n]['params'] / 1e6:.1f}M params), train step",
                 probe[n]["train"], measured_seconds, pb)
        unit_row(f"{n} probes forward (decode)", probe[n]["forward"], measured_seconds)
    unit_row(f"ThinResNet-34 train ({resnet['params'] / 1e6:.1f}M params, per {resnet['crop_seconds']:g} s crop)",
             resnet["train"], crops * resnet["crop_seconds"],
             speaker_conf["batch_size"] * resnet["crop_seconds"])
    unit_row("ThinResNet-34 embed (vocoded wavs)", resnet["embed"], wav_seconds)
    unit_row("GE2E embed (vocoded wavs, incl. VAD + mel)", ge2e, wav_seconds)
    out("")
    steps = "; ".join(f"{n} ASR {asr[n]['step'].cost.cpu:.2f} CPU s / {v100.seconds(asr[n]['step'].cost) * 1e3:.1f} "
                      f"V100 ms, probes {probe[n]['step'].cost.cpu:.2f} / {v100.seconds(probe[n]['step'].cost) * 1e3:.1f}"
                      for n in names)
    if args.linearity_check:
        lin_name, m = linearity
        short, full_s = per_s(asr[lin_name]["train"]), m.cost * (1.0 / ref_batch)
        out(f"Linearity check, {lin_name} training step on {args.batch_utts} x {args.utt_seconds:g} s instead of "
            f"{args.batch_utts} x {args.time_seconds:g} s: FLOPs per audio s x{full_s.flops / short.flops:.3f}, "
            f"CPU s per audio s x{full_s.cpu / short.cpu:.2f} ({m.cost.cpu:.1f} CPU s for the whole batch).\n")
    out(f"Per optimizer step (clip + Adam): {steps}; ThinResNet {resnet['step'].cost.cpu:.3f} / "
        f"{v100.seconds(resnet['step'].cost) * 1e3:.2f}.\n")
    out("Audio, CPU seconds per second of audio (1 thread): "
        + "; ".join(f"{layer} ({a_['seconds']:.1f} s of audio): Griffin-Lim {a_['griffin_lim'] * 1e3:.1f} ms, "
                    f"STOI+ESTOI+PESQ {a_['quality'] * 1e3:.1f} ms" for layer, a_ in audio.items())
        + ". BENCHMARKS.md (clean speech): STOI 4.4 + ESTOI 9.0 + PESQ-WB 8.9 = 22.3 ms.\n")
    # latency check: sequential LSTM steps of one config batch vs its FLOP-based LSTM time
    checks = []
    for n in names:
        m = asr[n]["train"]
        steps_per_utt_second = m.rnn_steps / args.time_seconds
        floor = steps_per_utt_second * args.utt_seconds * args.rnn_step_us * 1e-6
        batch_s = asr[n]["conf"]["batch_bins"] / FEAT_DIM / args.frame_rate
        rnn_time = (m.cost.rnn / measured_seconds) * batch_s / v100.rnn
        checks.append(f"{n}: {steps_per_utt_second * args.utt_seconds:,.0f} sequential steps per batch of "
                      f"{args.utt_seconds:g} s utterances x {args.rnn_step_us:g} us = {floor:.2f} s vs "
                      f"{rnn_time:.2f} s of LSTM FLOP time for the config batch ({batch_s:.0f} s of audio)")
    out("Latency check (V100, training): " + "; ".join(checks)
        + ". The FLOP-based time dominates at the configs' batch sizes; with much smaller batches the "
        "sequential steps would.\n")

    return lines


def stage_lines(args: argparse.Namespace, meas: SimpleNamespace, est: SimpleNamespace) -> list[str]:
    """Hours per stage on each GPU kind and in CPU core-hours."""
    stages, h, gpu_list, test_mean = est.stages, est.h, est.gpu_list, est.test_mean
    gl_per_s, vocoded_wavs, score_jobs = est.gl_per_s, est.vocoded_wavs, est.score_jobs
    lines = []
    out = lines.append
    out("## Per stage\n")
    out(f"GPU columns: hours on one GPU for the stages the recipe runs on GPU; [bracketed]: the networks of CPU "
        f"stages if they were moved to a GPU (the recipe does not). CPU core-h: what the recipe runs on CPU.\n")
    out("| stage | work | FLOPs | " + " | ".join(f"{g.name} h" for g in gpu_list)
        + " | CPU core-h | how the recipe spreads it |")
    out("|---|---|---:|" + "---:|" * len(gpu_list) + "---:|---|")
    totals = {g.name: 0.0 for g in gpu_list}
    cpu_total = 0.0
    for s in stages:
        cells = []
        for g in gpu_list:
            on_gpu = sum(g.seconds(c) for c in s.gpu_jobs) / h
            moved = sum(g.seconds(c) for c in s.gpu_able) / h
            totals[g.name] += on_gpu
            cell = fmt(on_gpu) if s.gpu_jobs else ""
            if s.gpu_able:
                cell += f" [{fmt(moved)}]"
            cells.append(cell.strip() or "-")
        cpu_h = sum(s.cpu_jobs) / h
        cpu_total += cpu_h
        out(f"| {s.name} | {s.work} | {flops_str(s.flops) if s.flops else '-'} | " + " | ".join(cells)
            + f" | {fmt(cpu_h) if s.cpu_jobs else '-'} | {s.spread} |")
    out(f"| **total** | | {flops_str(sum(s.flops for s in stages))} | "
        + " | ".join(f"**{fmt(totals[g.name])}**" for g in gpu_list) + f" | **{fmt(cpu_total)}** | |")
    out("")
    out("GPU jobs, V100 / A100 fp32 hours each: " + "; ".join(
        f"{label} {gpu_list[0].seconds(c) / h:.1f} / {gpu_list[1].seconds(c) / h:.1f}"
        for s in stages for label, c in zip(s.gpu_labels, s.gpu_jobs)) + ".\n")
    every = sum(vocoded_wavs(args.test_utts))
    out(f"With every test utterance vocoded (--vocode_max_utts 0): {every:,} wavs; stage 9 would take "
        f"{sum(w * test_mean * gl_per_s for w in vocoded_wavs(args.test_utts)) / h:,.0f} CPU core-h and stage 11 "
        f"{sum(score_jobs(args.test_utts)) / h:,.0f}.\n")

    return lines


def wall_clock_lines(args: argparse.Namespace, meas: SimpleNamespace, est: SimpleNamespace) -> list[str]:
    """Wall clock on one GPU and on a cluster, and the notes."""
    measured_seconds, probe_yaml, asr, probe = meas.measured_seconds, meas.probe_yaml, meas.asr, meas.probe
    stages, h, gpu_list, v100 = est.stages, est.h, est.gpu_list, est.v100
    names = est.names
    lines = []
    out = lines.append
    # ---- wall clock
    out("## Wall clock (stages run one after another, as in run.sh)\n")
    out(f"GPU stages: the best --asr_parallel x --ngpu split of the recipe's jobs (longest first); DDP over g GPUs "
        f"divides the FLOP time by g x {args.ddp_efficiency:g}^log2(g), never the sequential LSTM steps of a batch "
        f"(--rnn_step_us {args.rnn_step_us:g} per step). CPU stages: the recipe's single-threaded jobs "
        f"(one per model / experiment) on min(cores, jobs) cores; stage 10's CPU jobs run beside its GPU job.\n")
    out("| stage | " + " | ".join(
        f"1 GPU ({g.name.split()[0]} {g.name.split()[1]}) + {args.small_cores} cores" for g in gpu_list[:2])
        + " | " + " | ".join(f"{args.cluster_gpus} x {g.name.split()[0]} {g.name.split()[1]} + {args.cluster_cores} cores"
                             for g in gpu_list[:2]) + " |")
    out("|---|" + "---:|" * 4)
    walls = [0.0] * 4
    for s in stages:
        cells = []
        for k, (g, n_gpu, cores) in enumerate([(gpu_list[0], 1, args.small_cores), (gpu_list[1], 1, args.small_cores),
                                               (gpu_list[0], args.cluster_gpus, args.cluster_cores),
                                               (gpu_list[1], args.cluster_gpus, args.cluster_cores)]):
            gw, setting = gpu_wall(g, s.gpu_jobs, n_gpu, args.ddp_efficiency)
            cw = (sum(s.cpu_jobs) / h / cores) if s.divisible else lpt_wall([j / h for j in s.cpu_jobs], cores)
            wall = max(gw, cw)
            walls[k] += wall
            cells.append(f"{fmt(wall)}" + (f" ({setting})" if setting and n_gpu > 1 and gw >= cw else ""))
        out(f"| {s.name} | " + " | ".join(cells) + " |")
    out("| **total hours** | " + " | ".join(f"**{fmt(w)}** ({w / 24:.1f} d)" for w in walls) + " |")
    by_name = {st.name.split()[0]: st for st in stages}
    out("\n## Notes\n")
    score = by_name["11"]
    out(f"- Stage 11 runs one process per experiment; `score_layers --nj` exists but run.sh does not pass it. "
        f"With it, stage 11 would take {sum(score.cpu_jobs) / h / args.cluster_cores:.1f} h on "
        f"{args.cluster_cores} cores instead of {lpt_wall([j / h for j in score.cpu_jobs], args.cluster_cores):.1f} h.")
    cpu_nets = [by_name[k] for k in ("6", "8", "10")]
    cpu_wall = sum(lpt_wall([j / h for j in st.cpu_jobs], args.cluster_cores) for st in cpu_nets)
    gpu_equiv = sum(v100.seconds(c) for st in cpu_nets for c in st.gpu_able) / h
    out(f"- ASR decoding (6), probe decoding (8) and the speaker-ID probes' encoder passes (10) run on CPU, one "
        f"single-threaded job per model: {cpu_wall:.1f} h of the cluster wall clock for what is {gpu_equiv:.1f} "
        "V100-hours of network work. These tools take no --ngpu/--device option yet.")
    mem, largest = [], 0.0
    for n in names:
        asr_state = asr[n]["params"] * 16  # fp32 weights, gradients, Adam's two moments
        for label, m, bins, state in (
                ("ASR", asr[n]["train"], asr[n]["conf"]["batch_bins"], asr_state),
                ("probes", probe[n]["train"], probe_yaml["batch_bins"], probe[n]["params"] * 16 + asr[n]["params"] * 4)):
            act = m.saved_bytes / measured_seconds * bins / FEAT_DIM / args.frame_rate
            largest = max(largest, act + state)
            mem.append(f"{n} {label} {act / 1e9:.1f} + {state / 1e9:.1f} GB")
    fits = ("within 16 GB, but with little room for the allocator and cuDNN workspaces" if largest < 16e9
            else "over a 16 GB V100")
    out("- GPU memory per config batch: activations kept for backward (cuDNN LSTM reserve estimated as "
        f"{CUDNN_RESERVE_FLOATS}H floats per frame, direction and layer) + weights, gradients and Adam state: "
        + "; ".join(mem) + f". Largest {largest / 1e9:.1f} GB: {fits}; a 32 GB V100 or an A100 holds it, or "
        "--accum_grad 2 with half the batch_bins (same FLOPs).")
    out("- Epochs are the configs' max_epoch: an upper bound for ASR training, which stops after 6 epochs "
        "without a better validation loss. The paper-scale ASR configs have no growth stages "
        "(encoder_pretraining); the small configs needed them, and a config that has them is costed with them.")
    out("- Not estimated: stage 1 (download/copy), stage 2 (MUSAN mixing, I/O-bound, writes a 100.6 h noisy copy), "
        "stage 12 (report), data loading. Stage 8 writes every layer's predicted log-mel for every test "
        "utterance (size in its row).")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    started = time.time()
    load_before = os.getloadavg()[0]
    log = lambda msg: print(f"[{time.time() - started:5.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    from espnet_probe.utils.fileio import atomic_open

    measured = measure_all(args, log)
    estimated = estimate_stages(args, measured)
    sections = (unit_cost_lines, stage_lines, wall_clock_lines)
    lines = method_lines(args, measured, estimated, started, load_before)
    for section in sections:
        lines += section(args, measured, estimated)
    text = "\n".join(lines) + "\n"
    with atomic_open(args.out) as f:
        f.write(text)
    print(text)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()