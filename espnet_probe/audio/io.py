"""Reading utterance audio from Kaldi ``wav.scp`` entries with errors that say what and where."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import soundfile as sf

from espnet_probe.utils.fileio import atomic_path
from espnet_probe.utils.freshness import ark_archive
from espnet_probe.utils.kaldi_dir import KaldiDataDir, Segment

SAMPLE_RATE = 16000


class AudioError(RuntimeError):
    """Audio that cannot be used: missing, empty, corrupt, wrong rate or shape."""

    def __init__(self, utt: str, source: str, reason: str):
        super().__init__(f"utterance '{utt}' ({source}): {reason}")
        self.utt, self.source, self.reason = utt, source, reason

    def __reduce__(self):  # so the error survives the trip back from a worker process
        return type(self), (self.utt, self.source, self.reason)


# A ``cmd |`` entry that never ends would hang the stage: give it this long (seconds).
PIPE_TIMEOUT_S = 300.0
# An utterance shorter than this gives fewer than 10 feature frames (2 encoder frames after 4x
# subsampling): nothing a probe, a vocoder or a speaker encoder can work with. (Noise clips cut
# from a noise bank may be shorter: the limit applies to utterances.)
MIN_UTTERANCE_SECONDS = 0.1
# WAV data sizes that streaming writers (sox, ffmpeg to a pipe) put in place of the unknown length
_UNKNOWN_WAV_SIZES = {0, 0xFFFFFFFF}
_STREAMING_WAV_SIZE = 0x7FFFF000
_HEADER_BYTES = 1 << 16  # WAV metadata chunks (LIST, bext) before "data" fit in this


def declared_wav_frames(head: bytes) -> int | None:
    """Sample frames a RIFF/WAVE header promises, or None (not WAV, or length unknown)."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if chunk == b"fmt " and pos + 22 <= len(head):
            channels = struct.unpack("<H", head[pos + 10:pos + 12])[0]
            bits = struct.unpack("<H", head[pos + 22:pos + 24])[0] if pos + 24 <= len(head) else 0
            block_align = channels * ((bits + 7) // 8)
        if chunk == b"data":
            if size in _UNKNOWN_WAV_SIZES or size >= _STREAMING_WAV_SIZE or not block_align:
                return None
            return size // block_align
        pos += 8 + size + (size & 1)
    return None


def _check_complete(utt: str, source: str, head: bytes, frames: int, sr: int) -> None:
    """A file or pipe that ends before the samples its header promises is cut short."""
    promised = declared_wav_frames(head)
    if promised is not None and frames < promised:
        raise AudioError(utt, source, f"truncated: the WAV header promises {promised} samples "
                                      f"({promised / sr:.2f} s), the data holds {frames} "
                                      f"({frames / sr:.2f} s)")


def _read_pipe(utt: str, entry: str, timeout: float) -> tuple[np.ndarray, int]:
    cmd = entry[:-1].strip()
    # own process group, so a timeout kills the whole pipeline, not just the shell
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AudioError(utt, entry, f"command did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise AudioError(utt, entry, f"command failed with exit code {proc.returncode}: {last[0]}")
    if not out:
        raise AudioError(utt, entry, "command produced no audio")
    try:
        wav, sr = sf.read(io.BytesIO(out), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(utt, entry, f"command output is not readable audio ({e})") from None
    _check_complete(utt, entry, out[:_HEADER_BYTES], len(wav), sr)
    return wav, sr



def _read_file(utt: str, path: str, segment: Segment | None) -> tuple[np.ndarray, int]:
    p = Path(path)
    if not p.is_file():
        archive = ark_archive(path)  # Kaldi's "archive.ark:byte_offset"
        if archive is not None and archive.is_file():
            return _read_ark(utt, path, segment)
        raise AudioError(utt, path, "file not found")
    if p.stat().st_size == 0:
        raise AudioError(utt, path, "file is empty (0 bytes)")
    try:
        info = sf.info(p)
        with open(p, "rb") as f:
            head = f.read(_HEADER_BYTES)
        # libsndfile clamps a header that promises more than the file holds: compare ourselves
        _check_complete(utt, path, head, info.frames, info.samplerate)
        if segment is None:
            return sf.read(p, dtype="float32", always_2d=True)
        sr = info.samplerate
        start, stop = int(round(segment.start * sr)), int(round(segment.end * sr))
        wav, sr = sf.read(p, start=start, stop=stop, dtype="float32", always_2d=True)
        return wav, sr
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(utt, path, f"corrupt or unsupported audio ({e})") from None


def _read_ark(utt: str, entry: str, segment: Segment | None) -> tuple[np.ndarray, int]:
    """Audio stored in a Kaldi archive (wav-copy's output), addressed by byte offset."""
    try:
        loaded = kaldiio.load_mat(entry)
    except Exception as e:  # kaldiio raises bare ValueError / struct errors on a bad offset
        raise AudioError(utt, entry, f"cannot read audio from the archive at that offset ({e})") \
            from None
    if not isinstance(loaded, tuple):
        raise AudioError(utt, entry, "the archive holds a feature matrix here, not audio")
    sr, samples = loaded
    samples = np.asarray(samples)
    scale = float(np.iinfo(samples.dtype).max + 1) if samples.dtype.kind == "i" else 1.0
    wav = samples.astype(np.float32) / scale
    wav = wav[:, None] if wav.ndim == 1 else wav
    if segment is not None:
        wav = wav[int(round(segment.start * sr)):int(round(segment.end * sr))]
    return wav, int(sr)


def load_audio(utt: str, entry: str, segment: Segment | None = None,
               sample_rate: int = SAMPLE_RATE, timeout: float | None = None,
               min_seconds: float = 0.0) -> np.ndarray:
    """Mono float32 samples of one utterance; ``entry`` is a path, ``archive.ark:offset`` or
    a ``cmd |`` pipe (run for at most ``timeout`` seconds, default PIPE_TIMEOUT_S).

    Refused, naming the utterance and the entry: missing, empty, corrupt or truncated audio
    (fewer samples than the WAV header promises), another sample rate, several channels,
    NaN/inf, float samples beyond full scale (audio saved at integer scale), under
    ``min_seconds``.
    """
    entry = entry.strip()
    if entry.endswith("|"):
        wav, sr = _read_pipe(utt, entry, PIPE_TIMEOUT_S if timeout is None else timeout)
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
    where = " in its segment" if segment else ""
    if wav.size == 0:
        raise AudioError(utt, entry, "no samples" + where)
    if not np.all(np.isfinite(wav)):
        raise AudioError(utt, entry, "contains NaN or infinite samples")
    peak = float(np.max(np.abs(wav)))
    if peak > 1.0:
        hint = (" (float audio saved at 16-bit integer scale: divide by 32768)" if peak > 2.0
                else " (clipped float audio: scale it below 1.0)")
        raise AudioError(utt, entry, f"samples exceed full scale, peak {peak:.4g}{hint}")
    if wav.size < min_seconds * sample_rate:
        raise AudioError(utt, entry, f"only {wav.size} samples{where} "
                                     f"({1000 * wav.size / sample_rate:.1f} ms); an utterance "
                                     f"needs at least {min_seconds:g} s")
    return wav


def load_utterance(data: KaldiDataDir, utt: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    if utt not in data.utt2spk:
        raise KeyError(f"unknown utterance id '{utt}'")
    entry, segment = data.audio_entry(utt)
    return load_audio(utt, entry, segment, sample_rate, min_seconds=MIN_UTTERANCE_SECONDS)


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV, written atomically; clipping is an error rather than silent distortion."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak > 1.0:
        raise ValueError(f"{path}: samples exceed full scale (peak {peak:.3f}); scale first")
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(tmp, wav, sample_rate, subtype="PCM_16", format="WAV")
