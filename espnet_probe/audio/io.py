"""Reading utterance audio from Kaldi ``wav.scp`` entries with errors that say what and where."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from espnet_probe.data.kaldi_dir import KaldiDataDir, Segment
from espnet_probe.utils.fileio import atomic_path

SAMPLE_RATE = 16000


class AudioError(RuntimeError):
    """Audio that cannot be used: missing, empty, corrupt, wrong rate or shape."""

    def __init__(self, utt: str, source: str, reason: str):
        super().__init__(f"utterance '{utt}' ({source}): {reason}")
        self.utt, self.source, self.reason = utt, source, reason

    def __reduce__(self):  # so the error survives the trip back from a worker process
        return type(self), (self.utt, self.source, self.reason)


def _read_pipe(utt: str, entry: str) -> tuple[np.ndarray, int]:
    cmd = entry[:-1].strip()
    proc = subprocess.run(cmd, shell=True, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise AudioError(utt, entry, f"command failed with exit code {proc.returncode}: {err[0]}")
    if not proc.stdout:
        raise AudioError(utt, entry, "command produced no audio")
    try:
        return sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(utt, entry, f"command output is not readable audio ({e})") from None


def _read_file(utt: str, path: str, segment: Segment | None) -> tuple[np.ndarray, int]:
    p = Path(path)
    if not p.is_file():
        raise AudioError(utt, path, "file not found")
    if p.stat().st_size == 0:
        raise AudioError(utt, path, "file is empty (0 bytes)")
    try:
        if segment is None:
            return sf.read(p, dtype="float32", always_2d=True)
        sr = sf.info(p).samplerate
        start, stop = int(round(segment.start * sr)), int(round(segment.end * sr))
        wav, sr = sf.read(p, start=start, stop=stop, dtype="float32", always_2d=True)
        return wav, sr
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(utt, path, f"corrupt or unsupported audio ({e})") from None


def load_audio(utt: str, entry: str, segment: Segment | None = None,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples of one utterance; ``entry`` is a path or a ``cmd |`` pipe."""
    entry = entry.strip()
    if entry.endswith("|"):
        wav, sr = _read_pipe(utt, entry)
        if segment is not None:
            wav = wav[int(round(segment.start * sr)):int(round(segment.end * sr))]
    else:
        wav, sr = _read_file(utt, entry, segment)
    if sr != sample_rate:
        raise AudioError(utt, entry, f"sample rate is {sr} Hz, expected {sample_rate} Hz "
                                     "(resample the corpus first, e.g. with sox)")
    if wav.shape[1] != 1:
        raise AudioError(utt, entry, f"{wav.shape[1]} channels, expected mono")
    wav = wav[:, 0]
    if wav.size == 0:
        raise AudioError(utt, entry, "no samples" + (" in its segment" if segment else ""))
    if not np.all(np.isfinite(wav)):
        raise AudioError(utt, entry, "contains NaN or infinite samples")
    return wav


def load_utterance(data: KaldiDataDir, utt: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    if utt not in data.utt2spk:
        raise KeyError(f"unknown utterance id '{utt}'")
    entry, segment = data.audio_entry(utt)
    return load_audio(utt, entry, segment, sample_rate)


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV, written atomically; clipping is an error rather than silent distortion."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak > 1.0:
        raise ValueError(f"{path}: samples exceed full scale (peak {peak:.3f}); scale first")
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(tmp, wav, sample_rate, subtype="PCM_16", format="WAV")
