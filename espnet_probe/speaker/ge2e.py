"""GE2E speaker embeddings (Resemblyzer's pretrained LSTM encoder), as an ``Embedder``.

The weights ship inside the resemblyzer wheel, so this runs offline on a CPU. Audio is 16 kHz
float. Preprocessing is resemblyzer's own (raise the level to -30 dBFS, then webrtcvad-based
removal of long silences), with two guards, both counted and reported:
- ``silent``: digital silence (no sample reaches half a 16-bit step). Resemblyzer's volume
  normalisation would divide by zero here; the raw samples go to the encoder as they are, so
  every silent clip gets the encoder's one "silence" embedding.
- ``vad_fallback``: the VAD kept less than ``min_voiced_sec`` of audio (very short clips, or
  noise-like resynthesis from deep layers). Resemblyzer would then embed an empty signal, i.e.
  silence; instead the level-normalised but untrimmed audio is embedded.
Embedding follows resemblyzer's ``embed_utterance`` (1.6 s partials at 1.3 per second, last
one kept if 75% covered, mean of partial embeddings, L2-normalised; the tests check that the
results agree), with LSTM batches of partials that may span utterances. Torch and BLAS run on
one thread: parallelism comes from worker processes (``score_speaker --nj``).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from espnet_probe.audio.io import SAMPLE_RATE, load_audio
from espnet_probe.metrics import blas_threads
from espnet_probe.speaker.embedder import INT16_MAX, Embedder
from espnet_probe.utils.fileio import shard

EMBED_DIM = 256
STATUSES = ("ok", "vad_fallback", "silent")


@functools.cache
def _hann(n: int) -> np.ndarray:
    from scipy.signal import get_window

    return get_window("hann", n, fftbins=True)


@functools.cache
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    from librosa.filters import mel

    return mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


def _resemblyzer():
    with warnings.catch_warnings():  # it imports from a scipy namespace deprecated since 1.8
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import VoiceEncoder, audio, hparams
    return VoiceEncoder, audio, hparams


@dataclass
class EmbedStats:
    status: dict[str, str] = field(default_factory=dict)  # utt -> one of STATUSES

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for v in self.status.values() if v == s) for s in STATUSES}

    def report(self) -> dict:
        return GE2E.status_report(list(self.status), list(self.status.values()))


class GE2EEncoder:
    """Resemblyzer's pretrained GE2E encoder: ``embed(wavs)`` -> (N, 256) unit vectors."""

    def __init__(self, device: str = "cpu", min_voiced_sec: float = 0.2,
                 batch_partials: int = 64, num_threads: int = 1):
        VoiceEncoder, self._audio, self._hp = _resemblyzer()
        self.model = VoiceEncoder(device=device, verbose=False)
        self.model.eval()
        self.min_voiced = int(min_voiced_sec * SAMPLE_RATE)
        self.batch_partials = batch_partials
        # One thread by default: the LSTM batches are small, and OpenMP threads on a busy
        # machine spin-wait (measured: 0.17 s with 1 thread, 11 s with 2 under load).
        # Parallelism comes from worker processes (score_speaker --nj).
        self.num_threads = num_threads
        self.stats = EmbedStats()

    def preprocess(self, wav: np.ndarray) -> tuple[np.ndarray, str]:
        """Resemblyzer's level normalisation + VAD trimming, with the guards described above."""
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected a 1-D waveform, got shape {wav.shape}")
        if not np.isfinite(wav).all():
            raise ValueError("waveform contains NaN or infinite samples")
        if wav.size == 0 or np.max(np.abs(wav)) * INT16_MAX < 0.5:
            return wav, "silent"
        norm = self._audio.normalize_volume(wav, self._hp.audio_norm_target_dBFS,
                                            increase_only=True)
        # The VAD packs samples to int16 itself; keep them in range so nothing wraps around.
        norm = np.clip(norm, -1.0, 1.0).astype(np.float32)
        trimmed = self._audio.trim_long_silences(norm)
        if trimmed.size < self.min_voiced:
            return norm, "vad_fallback"
        return trimmed.astype(np.float32), "ok"

    def _partials(self, wav: np.ndarray) -> np.ndarray:
        wav_slices, mel_slices = self.model.compute_partial_slices(wav.size, rate=1.3,
                                                                   min_coverage=0.75)
        if wav_slices[-1].stop >= wav.size:
            wav = np.pad(wav, (0, wav_slices[-1].stop - wav.size))
        mel = self.mel_spectrogram(wav)
        return np.stack([mel[s] for s in mel_slices])

    def mel_spectrogram(self, wav: np.ndarray) -> np.ndarray:
        """resemblyzer's ``wav_to_mel_spectrogram``, (frames, mels) float32, the same bits
        (tests/test_ge2e.py): librosa's power mel spectrogram of zero-padded centred frames and
        a periodic Hann window, with librosa's own filter bank.  The frames and their FFT are
        computed here: importing librosa's feature module cost every scoring process 1.9 s.
        Each frame's spectrum is computed in float64 and stored at the input's precision, and
        the filter bank applied with the same einsum, as librosa does."""
        hp = self._hp
        n_fft = int(hp.sampling_rate * hp.mel_window_length / 1000)
        hop = int(hp.sampling_rate * hp.mel_window_step / 1000)
        if not np.isfinite(wav).all():
            raise ValueError("waveform contains NaN or infinite samples")
        padded = np.pad(wav, n_fft // 2)
        frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop].T
        spectrum = np.fft.rfft(_hann(n_fft)[:, None] * frames, axis=0)
        spectrum = np.asfortranarray(spectrum, dtype=np.result_type(wav.dtype, np.complex64))
        power = np.abs(spectrum) ** 2
        filters = _mel_filters(hp.sampling_rate, n_fft, hp.mel_n_channels)
        mel = np.einsum("...ft,mf->...mt", power, filters, optimize=True)
        return mel.astype(np.float32).T

    def embed(self, wavs: list[np.ndarray], utts: list[str] | None = None,
              progress: bool = False) -> np.ndarray:
        """Unit-norm embeddings of 16 kHz waveforms; statuses are recorded under ``utts``."""
        import torch

        if utts is None:
            utts = [str(i) for i in range(len(wavs))]
        if len(utts) != len(wavs):
            raise ValueError(f"{len(wavs)} waveforms but {len(utts)} ids")
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            with blas_threads(self.num_threads):  # the mel filter bank's product
                return self._embed(wavs, utts, progress)
        finally:
            torch.set_num_threads(old_threads)

    def _embed(self, wavs: list[np.ndarray], utts: list[str], progress: bool) -> np.ndarray:
        import torch

        out = np.zeros((len(wavs), EMBED_DIM), dtype=np.float32)
        pending: list[np.ndarray] = []  # partial mels waiting for the LSTM
        owners: list[int] = []

        def flush():
            if not pending:
                return
            with torch.no_grad():
                emb = self.model(torch.from_numpy(np.stack(pending)).to(self.model.device))
            np.add.at(out, np.array(owners), emb.cpu().numpy())
            pending.clear()
            owners.clear()

        it = zip(utts, wavs)
        if progress:
            it = tqdm(it, total=len(wavs), desc="GE2E", file=sys.stderr, mininterval=2)
        for i, (utt, wav) in enumerate(it):
            try:
                wav, status = self.preprocess(wav)
            except ValueError as e:
                raise ValueError(f"utterance '{utt}': {e}") from None
            self.stats.status[utt] = status
            parts = self._partials(wav)
            pending.extend(parts)
            owners.extend([i] * len(parts))
            if len(pending) >= self.batch_partials:
                flush()
        flush()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
        if bad.size:
            raise ValueError(f"utterance '{utts[bad[0]]}': the encoder gave no usable embedding")
        return out / norms


GE2E_NAME = "GE2E (resemblyzer pretrained, 256-d)"


def _embed_worker(args: tuple[list[tuple[str, str]], bool, str]):
    entries, progress, device = args
    enc = GE2EEncoder(device)
    utts = [u for u, _ in entries]
    embs = [np.zeros((0, EMBED_DIM), np.float32)]
    with tqdm(total=len(entries), desc="GE2E", file=sys.stderr, mininterval=2,
              disable=not progress) as bar:
        for start in range(0, len(entries), 32):  # stream: never all audio in memory
            chunk = entries[start:start + 32]
            wavs = [load_audio(u, e) for u, e in chunk]
            embs.append(enc.embed(wavs, [u for u, _ in chunk]))
            bar.update(len(chunk))
    return utts, np.concatenate(embs), [enc.stats.status[u] for u in utts]


def embed_entries(entries: list[tuple[str, str]], nj: int = 1, device: str = "cpu"
                  ) -> tuple[list[str], np.ndarray, list[str]]:
    """Embed (utt, wav.scp entry) pairs, in ``nj`` worker processes (one thread each)."""
    if nj <= 1:
        return _embed_worker((entries, True, device))
    shards = [s for s in (shard(entries, nj, j) for j in range(1, nj + 1)) if s]
    # spawn, not fork: a forked child of a process that already ran torch ops can deadlock.
    with ProcessPoolExecutor(max_workers=len(shards), mp_context=mp.get_context("spawn")) as pool:
        results = list(pool.map(_embed_worker,
                                [(s, j == 0, device) for j, s in enumerate(shards)]))
    utts = [u for r in results for u in r[0]]
    return utts, np.concatenate([r[1] for r in results]), [s for r in results for s in r[2]]


def ge2e_embedder(device: str = "cpu") -> Embedder:
    """GE2E on ``device``; the cache tag leaves the device out (same weights, same embeddings
    up to float rounding), so embeddings made on a GPU node are reused on a laptop."""
    return Embedder(GE2E_NAME, "ge2e-v1", functools.partial(embed_entries, device=device), STATUSES)


GE2E = ge2e_embedder()


