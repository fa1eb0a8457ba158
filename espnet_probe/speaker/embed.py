"""Embeddings and cosine trial scores from a trained ThinResNet + GhostVLAD speaker encoder.

The counterpart of espnet_probe.speaker.ge2e for our own encoder (the paper's speaker encoder
2), trained by espnet_probe.bin.speaker_train. A model dir is an ESPnet experiment: config.yaml
plus a checkpoint (valid.loss.ave.pth, valid.loss.best.pth or latest.pth, the first found).

Every utterance is embedded whole (no crops), with two guards, both counted and reported:
- ``silent``: digital silence (no sample reaches half a 16-bit step); embedded as it is, so
  every silent clip gets the model's one "silence" embedding.
- ``short``: under ``MIN_SECONDS``; repeated end to end up to that length first (the stride-16
  trunk would otherwise pool only a frame or two).
Torch runs on one thread per worker process (``nj`` processes), as for GE2E.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from espnet_probe.audio.io import SAMPLE_RATE, load_audio
from espnet_probe.metrics.trials import Trials
from espnet_probe.speaker.embedder import INT16_MAX, Embedder, SpeakerScoringError, score_speaker
from espnet_probe.speaker.resnet import ENCODER_DEFAULTS, load_encoder, repeat_pad
from espnet_probe.utils.fileio import shard
from espnet_probe.utils.freshness import entry_fingerprint
from espnet_probe.utils.yaml_io import load_yaml

MIN_SECONDS = 0.5
STATUSES = ("ok", "silent", "short")
CHECKPOINTS = ("valid.loss.ave.pth", "valid.loss.best.pth", "latest.pth")


def find_checkpoint(model_dir: str | Path) -> tuple[Path, Path]:
    """(config.yaml, checkpoint) of a trained speaker-encoder experiment."""
    model_dir = Path(model_dir)
    config = model_dir / "config.yaml"
    if not config.is_file():
        raise SpeakerScoringError(f"{model_dir}: no config.yaml; is this a speaker_train "
                                  "output dir?")
    for name in CHECKPOINTS:
        if (model_dir / name).exists():
            return config, model_dir / name
    raise SpeakerScoringError(f"{model_dir}: no checkpoint ({', '.join(CHECKPOINTS)}); "
                              "has training finished an epoch?")


def describe_model(model_dir: str | Path) -> str:
    """e.g. 'ThinResNet-34 (widths 32-64-128-256, blocks 3-4-6-3) + GhostVLAD (8+2 clusters),
    512-d, 64 log-mel bands'."""
    config, _ = find_checkpoint(model_dir)
    with open(config, encoding="utf-8") as f:
        args = load_yaml(f) or {}
    enc = {**ENCODER_DEFAULTS, **(args.get("encoder_conf") or {})}
    depth = 2 * sum(enc["blocks"]) + 2  # two convolutions per block, the stem, the output layer
    n_mels = (args.get("frontend_conf") or {}).get("n_mels", 80)
    return (f"ThinResNet-{depth} (widths {'-'.join(map(str, enc['widths']))}, blocks "
            f"{'-'.join(map(str, enc['blocks']))}) + GhostVLAD ({enc['clusters']}+"
            f"{enc['ghost_clusters']} clusters), {enc['embed_dim']}-d, {n_mels} log-mel bands")


class ResNetEmbedder:
    """A trained encoder: ``embed(wavs, utts)`` -> ((N, D) unit vectors, statuses)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 8,
                 num_threads: int = 1):
        config, checkpoint = find_checkpoint(model_dir)
        with open(config, encoding="utf-8") as f:
            self.encoder = load_encoder(load_yaml(f) or {}, checkpoint, device).eval()
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.min_samples = max(int(MIN_SECONDS * SAMPLE_RATE), self.encoder.min_samples)

    def preprocess(self, wav: np.ndarray) -> tuple[np.ndarray, str]:
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"expected a non-empty 1-D waveform, got shape {wav.shape}")
        status = "silent" if np.max(np.abs(wav)) * INT16_MAX < 0.5 else "ok"
        if wav.size < self.min_samples:
            wav = repeat_pad(wav, self.min_samples)
            status = "short" if status == "ok" else status
        return wav, status

    def embed(self, wavs: list[np.ndarray], utts: list[str]) -> tuple[np.ndarray, list[str]]:
        import torch

        if len(utts) != len(wavs):
            raise ValueError(f"{len(wavs)} waveforms but {len(utts)} ids")
        ready, statuses = [], []
        for utt, wav in zip(utts, wavs):
            try:
                wav, status = self.preprocess(wav)
            except ValueError as e:
                raise ValueError(f"utterance '{utt}': {e}") from None
            ready.append(wav)
            statuses.append(status)
        out = np.zeros((len(wavs), self.encoder.embed_dim), dtype=np.float32)
        order = np.argsort([w.size for w in ready])  # similar lengths share a batch
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                lengths = torch.tensor([ready[i].size for i in idx])
                batch = torch.zeros(len(idx), int(lengths.max()))
                for row, i in enumerate(idx):
                    batch[row, : ready[i].size] = torch.from_numpy(ready[i])
                with torch.no_grad():
                    out[idx] = self.encoder.embed(batch.to(self.device),
                                                  lengths.to(self.device)).cpu().numpy()
        finally:
            torch.set_num_threads(old_threads)
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if bad.size:
            raise ValueError(f"utterance '{utts[bad[0]]}': the encoder gave no usable embedding")
        return out, statuses


def _embed_shard(job: tuple[list[tuple[str, str]], str, bool, str]):
    entries, model_dir, progress, device = job
    embedder = ResNetEmbedder(model_dir, device)
    embs = [np.zeros((0, embedder.encoder.embed_dim), np.float32)]
    statuses: list[str] = []
    with tqdm(total=len(entries), desc="ThinResNet", file=sys.stderr, mininterval=2,
              disable=not progress) as bar:
        for start in range(0, len(entries), 32):  # stream: never all audio in memory
            chunk = entries[start:start + 32]
            emb, status = embedder.embed([load_audio(u, e) for u, e in chunk],
                                         [u for u, _ in chunk])
            embs.append(emb)
            statuses += status
            bar.update(len(chunk))
    return [u for u, _ in entries], np.concatenate(embs), statuses


def embed_entries(entries: list[tuple[str, str]], model_dir: str | Path, nj: int = 1,
                  device: str = "cpu") -> tuple[list[str], np.ndarray, list[str]]:
    """Embed (utt, wav.scp entry) pairs with the model in ``model_dir``, in ``nj`` processes:
    (utts, (N, D) L2-normalised float32 embeddings, one of STATUSES per utterance)."""
    nj = max(nj, 1)
    shards = [s for s in (shard(entries, nj, j) for j in range(1, nj + 1)) if s]
    if len(shards) <= 1:
        return _embed_shard((entries, str(model_dir), True, device))
    jobs = [(s, str(model_dir), j == 0, device) for j, s in enumerate(shards)]  # first one shows progress
    # spawn, not fork: a forked child of a process that already ran torch ops can deadlock
    with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
        parts = list(pool.map(_embed_shard, jobs))
    return ([u for p in parts for u in p[0]], np.concatenate([p[1] for p in parts]),
            [s for p in parts for s in p[2]])


def resnet_embedder(model_dir: str | Path, device: str = "cpu") -> Embedder:
    """The trained encoder in ``model_dir`` on ``device`` as embedder.score_speaker's ``embedder``;
    its cache tag changes whenever config.yaml or the checkpoint is rewritten (retraining)."""
    config, checkpoint = find_checkpoint(model_dir)
    tag = f"resnet-v1\t{entry_fingerprint(str(config))}\t{entry_fingerprint(str(checkpoint))}"
    return Embedder(name=f"{describe_model(model_dir)}; {checkpoint}", tag=tag,
                    embed=lambda entries, nj: embed_entries(entries, model_dir, nj, device),
                    statuses=STATUSES)


def score_speaker_resnet(wav_scp: str | Path, trials: Trials, out_dir: str | Path,
                         model_dir: str | Path, nj: int = 1, n_boot: int = 1000, seed: int = 0,
                         p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> dict:
    """embedder.score_speaker with this encoder: OUT/embeddings.npz (with its digest), OUT/scores
    and OUT/result.json, whose ``encoder`` describes the ThinResNet and names its checkpoint."""
    return score_speaker(wav_scp, trials, out_dir, nj, n_boot, seed, p_target, c_miss, c_fa,
                         embedder=resnet_embedder(model_dir))
