"""Log-mel -> waveform: pseudo-inverse of the mel filterbank, then batched fast Griffin-Lim.

The paper's vocoder (Li, Yuan & Lee 2020): mel -> linear magnitude by the filterbank's
pseudo-inverse, then Griffin-Lim phase recovery. Everything here inverts exactly the front end of
``espnet_probe.audio.features`` (same filters on the STFT magnitude, same Hann window, hop, FFT
size and centred reflect-padded frames), so a log-mel of real audio comes back as that audio's
magnitude up to what the 80 filters cannot represent.

Griffin-Lim runs on a padded batch of utterances of different lengths. Three things keep each
utterance independent of its batch mates (the result equals running it alone, to float error):
the target magnitude is zero on padded frames, the STFT of each estimate reflect-pads every
utterance at its *own* end, and the inverse STFT's window normalisation counts only the
utterance's own frames. The initial phase of each utterance comes from its own generator.

The second half vocodes a kaldi scp of log-mels into a directory of WAV files in resumable jobs
(``python -m espnet_probe.bin.vocode``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator, Sequence

import kaldiio
import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from tqdm import tqdm

from espnet_probe.audio.features import FbankConfig, mel_filterbank
from espnet_probe.audio.io import AudioError, load_audio, write_wav
from espnet_probe.utils.fileio import atomic_open, shard
from espnet_probe.utils.freshness import audio_files, is_stale
from espnet_probe.utils.kaldi_dir import Segment, read_table, write_table
from espnet_probe.utils.yaml_io import load_yaml

logger = logging.getLogger(__name__)

# Negative magnitudes are meaningless, and the pseudo-inverse dips below zero where a log-mel
# changes sharply between neighbouring filters (0.16 % of in-band bins of real speech, 4e-6 of
# the energy), so its output is clamped at this floor. Zero rather than a small positive value:
# bins no filter covers (below fmin, above fmax) come back exactly zero and should stay silent.
MAGNITUDE_FLOOR = 0.0
_PHASE_EPS = 1e-12  # guards the phase of an all-zero STFT bin (padding, out-of-band bins)
INIT_PHASES = ("random", "zero")


@dataclass(frozen=True)
class VocoderConfig:
    n_iter: int = 32
    momentum: float = 0.99
    init_phase: str = "random"
    seed: int = 0
    peak_limit: float = 0.99
    batch_frames: int = 1000
    max_batch: int = 16

    @classmethod
    def from_yaml(cls, path: str | Path) -> "VocoderConfig":
        with open(path, encoding="utf-8") as f:
            raw = load_yaml(f) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of vocoder options")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown vocoder options {unknown}; known: {sorted(known)}")
        try:
            return cls(**raw).validated()
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def validated(self) -> "VocoderConfig":
        if self.n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {self.n_iter}")
        if not 0 <= self.momentum < 2:
            raise ValueError(f"momentum must be in [0, 2), got {self.momentum}")
        if self.init_phase not in INIT_PHASES:
            raise ValueError(f"init_phase must be one of {INIT_PHASES}, got '{self.init_phase}'")
        if not 0 < self.peak_limit <= 1:
            raise ValueError(f"peak_limit must be in (0, 1], got {self.peak_limit}")
        if self.batch_frames < 1 or self.max_batch < 1:
            raise ValueError("batch_frames and max_batch must be >= 1")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=8)
def mel_pinv(cfg: FbankConfig) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) matrix M with magnitude ~= mel @ M (computed once per config).

    Shared between calls: do not modify it in place.
    """
    # float64: the lowest filters are narrower than an FFT bin, so the filterbank is rank
    # deficient (79 of 80 for conf/fbank.yaml) and its small singular values need the precision
    fb = mel_filterbank(cfg).astype(np.float64)
    return torch.from_numpy(np.linalg.pinv(fb).T.astype(np.float32))


def mel_to_magnitude(log_mel, cfg: FbankConfig) -> torch.Tensor:
    """(..., T, n_mels) log-mel -> (..., T, n_fft // 2 + 1) STFT magnitude, >= MAGNITUDE_FLOOR."""
    log_mel = torch.as_tensor(log_mel, dtype=torch.float32)
    if log_mel.dim() < 2 or log_mel.shape[-1] != cfg.n_mels:
        raise ValueError(f"expected log-mel of shape (..., T, {cfg.n_mels}), "
                         f"got {tuple(log_mel.shape)}")
    return (torch.exp(log_mel) @ mel_pinv(cfg)).clamp_min(MAGNITUDE_FLOOR)


def _frame_counts(batch: int, n_frames: int, hop: int, lengths, num_frames) -> tuple[list, list]:
    """Per-utterance (frames, samples), checked against each other and the tensor's T."""
    if num_frames is not None:
        frames = [int(t) for t in num_frames]
        if len(frames) != batch:
            raise ValueError(f"num_frames has {len(frames)} entries for a batch of {batch}")
        bad = [i for i, t in enumerate(frames) if not 1 <= t <= n_frames]
        if bad:
            raise ValueError(f"utterance #{bad[0]}: num_frames {frames[bad[0]]} is outside "
                             f"1..{n_frames} (the magnitude's padded length)")
    if lengths is None:
        frames = frames if num_frames is not None else [n_frames] * batch
        return frames, [(t - 1) * hop for t in frames]
    samples = [int(n) for n in lengths]
    if len(samples) != batch:
        raise ValueError(f"lengths has {len(samples)} entries for a batch of {batch}")
    implied = [1 + n // hop for n in samples]
    if num_frames is None:
        if max(implied) != n_frames:
            raise ValueError(f"lengths imply at most {max(implied)} frames (1 + samples // hop) "
                             f"but the magnitude has {n_frames}: lengths and frames disagree")
        frames = implied
    for i, (t, n) in enumerate(zip(frames, samples)):
        if 1 + n // hop != t:
            raise ValueError(f"utterance #{i}: {t} frames cannot come from {n} samples "
                             f"(centred frames give 1 + {n} // {hop} = {1 + n // hop})")
    return frames, samples


class _BatchFraming:
    """STFT / inverse STFT of a padded batch where each utterance behaves as if it were alone.

    Spectra are (B, T, F). The transforms are rfft / irfft of framed signals: the same maths as
    torch.stft / torch.istft (tests check this), but torch.istft normalises by the window
    envelope of the whole padded batch and was 1.7x slower than the hop-block overlap-add here.
    """

    def __init__(self, cfg: FbankConfig, frames: list[int], samples: list[int]):
        self.n_fft, self.hop, self.pad = cfg.n_fft, cfg.hop_length, cfg.n_fft // 2
        left = (cfg.n_fft - cfg.win_length) // 2  # window centred in the FFT frame, as torch does
        self.window = F.pad(torch.hann_window(cfg.win_length),
                            (left, cfg.n_fft - cfg.win_length - left))
        self.n_frames, self.n_samples = max(frames), max(samples)
        short = [i for i, n in enumerate(samples) if n <= self.pad]
        if short:
            raise ValueError(f"utterance #{short[0]}: {samples[short[0]]} samples is too short "
                             f"for centred frames (need more than n_fft // 2 = {self.pad})")
        lens = torch.tensor(samples)
        # Source sample of every position of each utterance's reflect-padded signal; positions
        # past an utterance's own padding only feed its padded frames, which are masked.
        pos = torch.arange(self.n_samples + 2 * self.pad)[None] - self.pad
        end = (lens - 1)[:, None]
        src = torch.where(pos < 0, -pos, pos)
        src = torch.where(src > end, 2 * end - src, src)
        self.reflect_index = src.clamp(0, self.n_samples - 1)
        self.frame_mask = torch.arange(self.n_frames)[None] < torch.tensor(frames)[:, None]
        # Normalise by the squared-window sum of each utterance's *own* frames; zero past its end.
        env = self._overlap_add(self.window.square() * self.frame_mask[:, :, None].float())
        inside = torch.arange(self.n_samples)[None] < lens[:, None]
        if bool((env[inside] < 1e-8).any()):
            raise ValueError(f"window of {cfg.win_length} samples with hop {cfg.hop_length} does "
                             "not cover every sample (NOLA fails): Griffin-Lim cannot invert it")
        self.inv_env = torch.where(inside, 1.0 / env.clamp_min(1e-8), 0.0)

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, n_fft) frames -> (B, n_samples), frame t starting at t * hop - pad."""
        b, t, n = frames.shape
        blocks = -(-n // self.hop)
        rows = max(t + blocks - 1, -(-(self.pad + self.n_samples) // self.hop))
        out = frames.new_zeros(b, rows, self.hop)
        for k in range(blocks):  # block k of every frame lands k hops after the frame's start
            width = min(self.hop, n - k * self.hop)
            out[:, k:k + t, :width] += frames[:, :, k * self.hop:k * self.hop + width]
        return out.view(b, -1)[:, self.pad:self.pad + self.n_samples]

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        padded = torch.gather(wav, 1, self.reflect_index.expand(wav.shape[0], -1))
        return torch.fft.rfft(padded.unfold(1, self.n_fft, self.hop) * self.window, dim=-1)

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window
        return self._overlap_add(frames) * self.inv_env


def _initial_phase(frames: list[int], n_frames: int, n_bins: int, init: str,
                   seed: int) -> torch.Tensor:
    """(B, T, F) phase; each utterance draws from its own generator so batching cannot change it."""
    phase = torch.zeros(len(frames), n_frames, n_bins)
    if init == "zero":
        return phase
    if init != "random":
        raise ValueError(f"init must be one of {INIT_PHASES}, got '{init}'")
    for i, t in enumerate(frames):
        gen = torch.Generator().manual_seed(seed)
        phase[i, :t] = 2 * math.pi * torch.rand(t, n_bins, generator=gen)
    return phase


def _project_magnitude(spec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keep the phase of ``spec``, impose ``target`` magnitude; on the real view (B, T, F, 2)
    because complex abs / multiply were 2.5x slower than these real ops on CPU."""
    re, im = spec[..., 0], spec[..., 1]
    scale = torch.addcmul(re * re, im, im).clamp_min_(_PHASE_EPS ** 2).rsqrt_().mul_(target)
    out = torch.empty_like(spec)
    torch.mul(re, scale, out=out[..., 0])
    torch.mul(im, scale, out=out[..., 1])
    return out


def griffin_lim(magnitude, cfg: FbankConfig, n_iter: int = 32, momentum: float = 0.99,
                lengths: Sequence[int] | None = None, seed: int = 0, init: str = "random",
                num_frames: Sequence[int] | None = None) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin, Balazs & Sondergaard 2013) on a padded batch.

    magnitude: (T, F) or (B, T, F) STFT magnitudes, F = n_fft // 2 + 1, in the front end's
      framing; padded frames of shorter utterances may hold anything (they are ignored).
    lengths: samples per utterance; the output has exactly that many (frames must equal
      1 + length // hop). Without it an utterance of T frames gives (T - 1) * hop samples.
    num_frames: frames per utterance when the batch is padded and lengths are not given.
    momentum: 0 is plain Griffin-Lim; Perraudin et al. recommend 0.99.
    init: "random" (uniform phase, seeded per utterance by ``seed``) or "zero".
    Returns (B, max samples) float32, zero past each utterance's length ((N,) for a (T, F) input).
    """
    mag = torch.as_tensor(magnitude, dtype=torch.float32)
    single = mag.dim() == 2
    if single:
        mag = mag[None]
    n_bins = cfg.n_fft // 2 + 1
    if mag.dim() != 3 or mag.shape[-1] != n_bins or mag.shape[1] < 1:
        raise ValueError(f"expected magnitude of shape ([B,] T, {n_bins}), got "
                         f"{tuple(torch.as_tensor(magnitude).shape)}")
    if momentum < 0:
        raise ValueError(f"momentum must be >= 0, got {momentum}")
    frames, samples = _frame_counts(mag.shape[0], mag.shape[1], cfg.hop_length, lengths,
                                    num_frames)
    framing = _BatchFraming(cfg, frames, samples)
    # where, not a product: inf * 0 on a padded frame would be NaN and leak through the OLA
    target = torch.where(framing.frame_mask[:, :, None], mag[:, :framing.n_frames], 0.0)
    bad = [i for i, t in enumerate(frames) if not torch.isfinite(target[i, :t]).all()]
    if bad:
        raise ValueError(f"utterance #{bad[0]}: magnitude has NaN or infinite values")

    phase = _initial_phase(frames, framing.n_frames, n_bins, init, seed)
    # Real views (..., 2) of the complex spectra; c_0 = target magnitude with the initial phase.
    proj = torch.view_as_real(torch.polar(target, phase))
    estimate = proj
    for _ in range(n_iter):
        # c_n = P_mag(P_consistent(t_{n-1})); t_n = c_n + momentum * (c_n - c_{n-1})
        rebuilt = framing.stft(framing.istft(torch.view_as_complex(estimate)))
        new = _project_magnitude(torch.view_as_real(rebuilt), target)
        estimate = torch.lerp(proj, new, 1.0 + momentum) if momentum else new
        proj = new
    wav = framing.istft(torch.view_as_complex(proj))
    return wav[0] if single else wav


def spectral_convergence(magnitude, wav, cfg: FbankConfig) -> float:
    """||S - |STFT(wav)||| / ||S|| for one utterance: how consistent the phase estimate is."""
    mag = torch.as_tensor(magnitude, dtype=torch.float32)
    wav = torch.as_tensor(wav, dtype=torch.float32)
    spec = torch.stft(wav, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                      window=torch.hann_window(cfg.win_length), center=True, pad_mode="reflect",
                      return_complex=True).abs().T
    if spec.shape != mag.shape:
        raise ValueError(f"waveform gives {tuple(spec.shape)} STFT frames x bins, "
                         f"magnitude is {tuple(mag.shape)}")
    return float(torch.linalg.norm(mag - spec) / torch.linalg.norm(mag))


def peak_limit(wav: np.ndarray, limit: float) -> tuple[np.ndarray, float]:
    """Scale down (never up) so that max |wav| <= limit; returns the gain applied."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak <= limit:
        return wav, 1.0
    gain = limit / peak
    return (wav * gain).astype(np.float32), gain


def vocode(log_mel_batch: Sequence, lengths: Sequence[int] | None, cfg: FbankConfig,
           vocoder_cfg: VocoderConfig, utt_ids: Sequence[str] | None = None,
           return_gains: bool = False):
    """List of (T_i, n_mels) log-mels -> list of float32 waveforms (peak <= peak_limit).

    lengths: samples per utterance (exact output lengths) or None for (T_i - 1) * hop.
    A waveform whose peak exceeds peak_limit is scaled down and logged (by utt id if given);
    with return_gains the gains come back too, as (waveforms, gains).
    """
    names = list(utt_ids) if utt_ids is not None else [f"#{i}" for i in range(len(log_mel_batch))]
    if len(names) != len(log_mel_batch):
        raise ValueError(f"{len(names)} utterance ids for {len(log_mel_batch)} log-mels")
    if not log_mel_batch:
        return ([], []) if return_gains else []
    # copies: kaldiio hands out read-only arrays, and padding below writes anyway
    mels = [torch.tensor(np.asarray(m), dtype=torch.float32) for m in log_mel_batch]
    for name, m in zip(names, mels):
        if m.dim() != 2 or m.shape[1] != cfg.n_mels or m.shape[0] < 1:
            raise ValueError(f"utterance '{name}': log-mel shape {tuple(m.shape)}, "
                             f"expected (T, {cfg.n_mels})")
        if not torch.isfinite(m).all():
            raise ValueError(f"utterance '{name}': log-mel contains NaN or infinite values")
    frames = [m.shape[0] for m in mels]
    padded = torch.full((len(mels), max(frames), cfg.n_mels), math.log(cfg.log_floor))
    for i, m in enumerate(mels):
        padded[i, :m.shape[0]] = m
    try:
        wav = griffin_lim(mel_to_magnitude(padded, cfg), cfg, n_iter=vocoder_cfg.n_iter,
                          momentum=vocoder_cfg.momentum, lengths=lengths, seed=vocoder_cfg.seed,
                          init=vocoder_cfg.init_phase, num_frames=frames)
    except ValueError as e:  # name the utterance instead of its batch index
        msg = str(e)
        for i, name in enumerate(names):
            msg = msg.replace(f"utterance #{i}:", f"utterance '{name}':")
        raise ValueError(msg) from None
    n_out = lengths if lengths is not None else [(t - 1) * cfg.hop_length for t in frames]
    out, gains = [], []
    for name, row, n in zip(names, wav.numpy(), n_out):
        w, gain = peak_limit(row[:int(n)].astype(np.float32), vocoder_cfg.peak_limit)
        if gain < 1.0:
            logger.warning("utterance '%s': peak %.3f above %.2f, scaled by %.2f dB", name,
                           vocoder_cfg.peak_limit / gain, vocoder_cfg.peak_limit,
                           20 * math.log10(gain))
        out.append(w)
        gains.append(gain)
    return (out, gains) if return_gains else out


# ---------------------------------------------------------------------------------------------
# Vocoding a kaldi scp of log-mels into DIR/wav/<utt>.wav, in resumable jobs.


@contextlib.contextmanager
def torch_threads(n: int):
    """Set torch's intra-op thread count for a block, then restore it."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def parallel_map(fn, items: Sequence, workers: int) -> Iterator:
    """fn over items on ``workers`` Python threads, each running torch single-threaded; yields
    results in order. Torch ops release the GIL, so this uses ``workers`` cores. On 2 idle
    cores this is about as fast as 2 intra-op torch threads (bench/RESULTS_griffinlim.md), but
    when other processes share the cores, intra-op barriers stall (single runs up to 100x
    slower than idle were measured) while independent workers slow down only in proportion."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with torch_threads(1), ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for fut in futures:
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()


class VocodeError(RuntimeError):
    """Inputs of a vocoding job that do not fit together (ids, lengths, shapes, values)."""


def mel_shape(loc: str) -> tuple[int, int]:
    """(rows, cols) of a kaldi matrix from its header when possible, else by loading it."""
    m = re.fullmatch(r"(.+):(\d+)", loc)
    if m:
        with open(m[1], "rb") as f:
            f.seek(int(m[2]))
            head = f.read(15)
        # binary float/double matrix: "\0B" "FM " then two int32s each preceded by their size (4)
        if len(head) == 15 and head[:2] == b"\0B" and head[2:5] in (b"FM ", b"DM ") \
                and head[5] == 4 and head[10] == 4:
            rows, cols = struct.unpack("<i", head[6:10])[0], struct.unpack("<i", head[11:15])[0]
            return rows, cols
    return tuple(kaldiio.load_mat(loc).shape)


class SampleCounts:
    """Exact sample counts per utterance from a ``wav.scp`` (``*.scp``, with ``segments`` beside
    it if present) or from a ``utt2num_samples``-style table of integers."""

    def __init__(self, path: str | Path, sample_rate: int):
        self.path, self.sample_rate = Path(path), sample_rate
        self.table = read_table(self.path)
        self.segments: dict[str, Segment] | None = None
        self.is_scp = self.path.suffix == ".scp"
        if self.is_scp:
            seg_file = self.path.parent / "segments"
            if seg_file.is_file():
                self.segments = {}
                for utt, value in read_table(seg_file).items():
                    parts = value.split()
                    try:
                        self.segments[utt] = Segment(parts[0], float(parts[1]), float(parts[2]))
                    except (IndexError, ValueError):
                        raise VocodeError(f"{seg_file}: '{utt}' must be 'utt recording start "
                                          f"end', got '{value}'") from None
        else:
            for utt, value in self.table.items():
                if not value.isdigit():
                    raise VocodeError(f"{self.path}: value of '{utt}' is '{value}', not a sample "
                                      "count (name a wav.scp *.scp to measure audio instead)")

    def ids(self) -> set[str]:
        return set(self.segments) if self.segments is not None else set(self.table)

    def __call__(self, utt: str) -> int:
        if self.segments is not None:
            if utt not in self.segments:
                raise VocodeError(f"utterance '{utt}' is not in {self.path.parent / 'segments'}")
            seg = self.segments[utt]
            if seg.recording not in self.table:
                raise VocodeError(f"{self.path.parent / 'segments'}: '{utt}' names recording "
                                  f"'{seg.recording}' that is not in {self.path}")
            return len(load_audio(utt, self.table[seg.recording], seg, self.sample_rate))
        if utt not in self.table:
            raise VocodeError(f"utterance '{utt}' is not in {self.path}")
        entry = self.table[utt]
        if not self.is_scp:
            return int(entry)
        if entry.endswith("|") or not Path(entry).is_file():
            return len(load_audio(utt, entry, None, self.sample_rate))  # pipes: decode to count
        try:
            info = sf.info(entry)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(utt, entry, f"corrupt or unsupported audio ({e})") from None
        if info.samplerate != self.sample_rate:
            raise AudioError(utt, entry, f"sample rate is {info.samplerate} Hz, expected "
                                         f"{self.sample_rate} Hz")
        return int(info.frames)


@dataclass
class _Item:
    utt: str
    loc: str
    frames: int
    samples: int | None


def length_batches(items: list, frames: Sequence[int], batch_frames: int,
                   max_batch: int) -> list[list]:
    """Longest first; a batch holds at most max_batch items and batch_frames padded frames."""
    order = sorted(range(len(items)), key=lambda i: (-frames[i], i))
    batches: list[list] = []
    cur: list[int] = []
    for i in order:
        # sorted longest first, so the batch's first item sets its padded length
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * frames[cur[0]] > batch_frames):
            batches.append([items[j] for j in cur])
            cur = []
        cur.append(i)
    if cur:
        batches.append([items[j] for j in cur])
    return batches


def _wav_scp_name(job: int | None) -> str:
    return "wav.scp" if job is None else f"wav.{job}.scp"


def _record_settings(out_dir: Path, settings: dict) -> Path:
    """out_dir/vocode_config.json, rewritten when the settings change: every wav older than it
    is then stale (``is_stale``), so a resumed dir never mixes outputs of two settings."""
    path = out_dir / "vocode_config.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old == settings:
            return path
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        logger.info("%s: vocoded with other settings before (%s): vocoding every utterance "
                    "again", out_dir, ", ".join(changed))
    with atomic_open(path) as f:
        json.dump(settings, f, indent=1, sort_keys=True)
    return path


def vocode_scp(mel_scp: str | Path, out_dir: str | Path, cfg: FbankConfig,
               vocoder_cfg: VocoderConfig, lengths_from: str | Path | None = None,
               nj: int = 1, job: int | None = None, workers: int = 1) -> dict:
    """Vocode this job's share of ``mel_scp`` into out_dir/wav/<utt>.wav and list them in
    out_dir/wav.scp (wav.<job>.scp for a job); already written utterances are kept.
    ``workers`` batches run at once, each on one torch thread (see parallel_map)."""
    mel_scp, out_dir = Path(mel_scp), Path(out_dir)
    entries = read_table(mel_scp)
    if not entries:
        raise VocodeError(f"{mel_scp}: no utterances")
    for utt in entries:
        if "/" in utt or utt.startswith("."):
            raise VocodeError(f"{mel_scp}: utterance id '{utt}' cannot be a file name")
    utts = shard(list(entries), nj, job) if job is not None else list(entries)
    counts = SampleCounts(lengths_from, cfg.sample_rate) if lengths_from else None
    if counts is not None:
        extra = counts.ids() - set(entries)
        if extra:
            logger.info("%s: %d ids not in %s are ignored", lengths_from, len(extra), mel_scp)
    settings = _record_settings(out_dir, {"fbank": cfg.as_dict(), "vocoder": vocoder_cfg.as_dict(),
                              "exact_lengths": counts is not None})
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)

    todo: list[_Item] = []
    for utt in utts:
        # written atomically, so present means complete; older than the settings or its mel
        # (a probe decoded again) means stale
        if not is_stale(wav_dir / f"{utt}.wav", [settings, *audio_files(entries[utt])]):
            continue
        try:
            frames, dim = mel_shape(entries[utt])
        except (OSError, ValueError, struct.error) as e:
            raise VocodeError(f"{mel_scp}: utterance '{utt}': cannot read {entries[utt]} "
                              f"({e})") from None
        if dim != cfg.n_mels:
            raise VocodeError(f"{mel_scp}: utterance '{utt}' has {dim}-dim frames, the fbank "
                              f"config says n_mels={cfg.n_mels}")
        samples = counts(utt) if counts is not None else None
        if samples is not None and 1 + samples // cfg.hop_length != frames:
            raise VocodeError(f"utterance '{utt}': {frames} mel frames in {mel_scp} but "
                              f"{samples} samples in {lengths_from} (which give "
                              f"{1 + samples // cfg.hop_length} frames): mismatched files")
        todo.append(_Item(utt, entries[utt], frames, samples))

    def run(batch: list[_Item]) -> tuple[float, int]:
        mels = []
        for it in batch:
            try:
                mels.append(kaldiio.load_mat(it.loc))
            except (OSError, ValueError) as e:
                raise VocodeError(f"{mel_scp}: utterance '{it.utt}': cannot read "
                                  f"{it.loc} ({e})") from None
        lengths = [it.samples for it in batch] if counts is not None else None
        try:
            wavs, gains = vocode(mels, lengths, cfg, vocoder_cfg,
                                 utt_ids=[it.utt for it in batch], return_gains=True)
        except ValueError as e:
            raise VocodeError(f"{mel_scp}: {e}") from None
        for it, wav in zip(batch, wavs):
            write_wav(wav_dir / f"{it.utt}.wav", wav, cfg.sample_rate)
        return sum(w.size for w in wavs) / cfg.sample_rate, sum(g < 1.0 for g in gains)

    start = time.perf_counter()
    seconds, rescaled = 0.0, 0
    batches = length_batches(todo, [it.frames for it in todo], vocoder_cfg.batch_frames,
                             vocoder_cfg.max_batch)
    desc = "vocode" + (f" job {job}/{nj}" if job is not None else "")
    with tqdm(total=len(todo), desc=desc, unit="utt", file=sys.stderr, mininterval=2) as bar:
        for batch, (secs, n_scaled) in zip(batches, parallel_map(run, batches, workers)):
            seconds += secs
            rescaled += n_scaled
            bar.update(len(batch))
    elapsed = time.perf_counter() - start
    write_table(out_dir / _wav_scp_name(job), {u: str(wav_dir / f"{u}.wav") for u in utts})
    return {"utterances": len(utts), "written": len(todo), "skipped": len(utts) - len(todo),
            "rescaled": int(rescaled), "audio_seconds": round(seconds, 2),
            "seconds": round(elapsed, 2),
            "rtf": round(elapsed / seconds, 4) if seconds else None}


def merge_wav_scps(mel_scp: str | Path, out_dir: str | Path, nj: int) -> dict:
    """Join wav.1..nj.scp into wav.scp after checking every utterance of mel_scp has audio."""
    mel_scp, out_dir = Path(mel_scp), Path(out_dir)
    merged: dict[str, str] = {}
    for j in range(1, nj + 1):
        path = out_dir / _wav_scp_name(j)
        if not path.exists():
            raise VocodeError(f"{path}: missing; job {j} of {nj} did not finish")
        merged.update(read_table(path))
    wanted = read_table(mel_scp)
    missing = [u for u in wanted if u not in merged or not Path(merged[u]).is_file()]
    if missing:
        raise VocodeError(f"{out_dir}: {len(missing)} utterances of {mel_scp} have no waveform "
                          f"(e.g. '{missing[0]}'); were the jobs run with --nj {nj}?")
    unknown = sorted(set(merged) - set(wanted))
    if unknown:
        raise VocodeError(f"{out_dir}: job scps list {len(unknown)} utterances not in {mel_scp} "
                          f"(e.g. '{unknown[0]}'): stale output of another scp?")
    write_table(out_dir / "wav.scp", merged)
    return {"utterances": len(merged), "jobs": nj}
