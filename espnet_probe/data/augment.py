"""MUSAN-style noise augmentation of Kaldi data dirs, and fixed-SNR noisy test sets.

MUSAN layout: a directory with ``noise/``, ``music/`` and ``speech/`` folders holding 16 kHz
mono WAV files at any depth. Three noise *types* draw from them:

- ``noise``: one file from ``noise/``;
- ``music``: one file from ``music/``;
- ``babble``: 3..7 (configurable) different talkers from ``speech/``, summed at equal energy; a
  talker is a file, or, where a ``file2spk`` table names the files' speakers (voices made from
  the training set, espnet_probe.data.babble), a speaker other than the utterance's own.

The recording is looped or cropped at a random offset to the utterance length and added at an
exact whole-utterance SNR (see :mod:`espnet_probe.audio.mix`). Every random choice for an
utterance comes from a generator seeded by (seed, purpose, utterance id), so the output does not
depend on the number of worker processes or on their order.

What was done is written to ``noise_info``, one line per utterance::

    <utt> type=babble snr=15.27 files=speech/a.wav@12345,speech/b.wav@0,... gain=1.000000

``files`` are paths relative to the MUSAN dir (URL-quoted if they contain unusual characters)
with the sample offset at which the noise was read; ``gain`` is the anti-clipping gain applied
to the whole mixture. :meth:`Augmenter.rebuild` recreates the exact mixture from such a line.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import pickle
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import soundfile as sf
from tqdm import tqdm

from espnet_probe.audio.io import (MIN_UTTERANCE_SECONDS, SAMPLE_RATE, AudioError, load_audio,
                                   write_wav)
from espnet_probe.audio.mix import (DEFAULT_PEAK_LIMIT, Mixture, MixError, fit_length,
                                    is_silent, make_babble, mix_at_snr, random_offset)
from espnet_probe.data.babble import read_file2spk
from espnet_probe.utils.kaldi_dir import (DataDirError, KaldiDataDir, Segment, load_data_dir,
                                         write_data_dir)
from espnet_probe.utils.yaml_io import load_yaml

MUSAN_FOLDERS = ("noise", "music", "speech")
# noise type -> the MUSAN folder it draws from
TYPE_FOLDER = {"noise": "noise", "music": "music", "babble": "speech"}
NOISE_TYPES = tuple(TYPE_FOLDER)
# A drawn segment that is silent (e.g. a gap in a recording) is redrawn this many times
# before giving up: a few silent stretches must not abort a 28k-utterance run.
MAX_DRAWS = 10


class MusanError(ValueError):
    """A MUSAN-style noise directory or one of its files cannot be used."""


class AugmentConfigError(ValueError):
    """conf/augment.yaml is malformed."""


# ----------------------------------------------------------------------------- MUSAN listing

def list_musan(musan_dir: str | Path, folders: tuple[str, ...] = MUSAN_FOLDERS
               ) -> dict[str, list[str]]:
    """WAV files under each requested folder, as sorted paths relative to ``musan_dir``."""
    root = Path(musan_dir)
    if not root.is_dir():
        raise MusanError(f"{root}: MUSAN directory not found")
    out: dict[str, list[str]] = {}
    for folder in folders:
        sub = root / folder
        if not sub.is_dir():
            raise MusanError(f"{sub}: folder not found (a MUSAN dir needs "
                             f"{', '.join(f + '/' for f in MUSAN_FOLDERS)})")
        files = sorted(p.relative_to(root).as_posix() for p in sub.rglob("*")
                       if p.suffix.lower() == ".wav" and p.is_file())
        if not files:
            raise MusanError(f"{sub}: no .wav files found (searched recursively)")
        out[folder] = files
    return out


def describe_noise(musan_dir: str | Path) -> str:
    """One sentence for a report: which noise recordings the noisy sets were mixed from."""
    root = Path(musan_dir)
    listing = list_musan(root)
    file2spk = read_file2spk(root / "speech")
    parts = []
    for kind, folder in TYPE_FOLDER.items():
        by_source: dict[str, list[str]] = {}
        for rel in listing[folder]:
            source = "/".join(Path(rel).parts[:2]) if len(Path(rel).parts) > 2 else folder
            by_source.setdefault(source, []).append(rel)
        sources = []
        for source, files in sorted(by_source.items()):
            speakers = {file2spk[r] for r in files if r in file2spk}
            sources.append(f"{source} ({len(files)} files"
                           + (f": voices of {len(speakers)} training speakers, never an "
                              "utterance's own" if speakers else "") + ")")
        parts.append(f"{kind} from " + " and ".join(sources))
    return f"Noise mixed from {root.resolve()}: " + "; ".join(parts) + "."


def check_musan_files(musan_dir: str | Path, listing: dict[str, list[str]],
                      sample_rate: int = SAMPLE_RATE) -> dict[str, int]:
    """Read every file's header up front, so a bad file fails the run before hours of work.

    Returns the number of samples of each file.
    """
    root = Path(musan_dir)
    frames: dict[str, int] = {}
    for files in listing.values():
        for rel in files:
            path = root / rel
            try:
                info = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError) as e:
                raise MusanError(f"{path}: not readable audio ({e})") from None
            if info.samplerate != sample_rate:
                raise MusanError(f"{path}: sample rate is {info.samplerate} Hz, expected "
                                 f"{sample_rate} Hz (resample it, e.g. with sox)")
            if info.channels != 1:
                raise MusanError(f"{path}: {info.channels} channels, expected mono")
            if info.frames <= 0:
                raise MusanError(f"{path}: no samples")
            frames[rel] = int(info.frames)
    return frames


class NoiseBank:
    """Reads noise recordings, keeping whole small files in a per-process LRU cache.

    Files larger than ``max_file_mb`` (e.g. MUSAN's hour-long speech recordings) are read
    segment by segment from disk instead, so memory stays bounded on the full MUSAN.
    """

    def __init__(self, musan_dir: str | Path, frames: dict[str, int], *,
                 cache_mb: float = 512, max_file_mb: float = 32):
        self.root = Path(musan_dir)
        self.frames = frames
        self.cache_bytes = int(cache_mb * 2**20)
        self.max_file_bytes = min(int(max_file_mb * 2**20), self.cache_bytes)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self.loads = 0  # whole-file or segment reads from disk (for tests and stats)

    def _load(self, rel: str, segment: Segment | None = None) -> np.ndarray:
        path = self.root / rel
        self.loads += 1
        try:
            return load_audio(f"noise:{rel}", str(path), segment)
        except AudioError as e:
            raise MusanError(f"{path}: {e.reason}") from None

    def whole(self, rel: str) -> np.ndarray:
        wav = self._cache.get(rel)
        if wav is not None:
            self._cache.move_to_end(rel)
            return wav
        wav = self._load(rel)
        if wav.nbytes <= self.max_file_bytes:
            self._cache[rel] = wav
            self._cached_bytes += wav.nbytes
            while self._cached_bytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return wav

    def read(self, rel: str, offset: int, length: int) -> np.ndarray:
        """``length`` samples from ``offset``, wrapping around the end of the recording."""
        n = self.frames[rel]
        if not 0 <= offset < n:
            raise MusanError(f"{self.root / rel}: offset {offset} outside 0..{n - 1}")
        small = n * 4 <= self.max_file_bytes
        if small or rel in self._cache or offset + length > n:
            wav = self.whole(rel)
            if wav.size != n:
                raise MusanError(f"{self.root / rel}: header says {n} samples, read {wav.size}")
            return fit_length(wav, length, offset)
        seg = Segment(rel, offset / SAMPLE_RATE, (offset + length) / SAMPLE_RATE)
        wav = self._load(rel, seg)
        if wav.size != length:
            raise MusanError(f"{self.root / rel}: read {wav.size} samples at offset {offset}, "
                             f"expected {length} (truncated file?)")
        return wav


# ----------------------------------------------------------------------------- config

@dataclass
class TypeSpec:
    snr: tuple[float, float]                 # uniform SNR range in dB (training)
    speakers: tuple[int, int] | None = None  # babble only: number of talkers, inclusive


@dataclass
class AugmentConfig:
    types: dict[str, TypeSpec]
    copies: int = 1
    peak_limit: float = DEFAULT_PEAK_LIMIT
    cache_mb: float = 512


def _pair(path, key, value, cast):
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise AugmentConfigError(f"{path}: '{key}' must be a [low, high] pair, got {value!r}")
    lo, hi = cast(value[0]), cast(value[1])
    if lo > hi:
        raise AugmentConfigError(f"{path}: '{key}' has low {lo} > high {hi}")
    return lo, hi


def load_config(path: str | Path) -> AugmentConfig:
    path = Path(path)
    if not path.is_file():
        raise AugmentConfigError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        raw = load_yaml(f)
    if not isinstance(raw, dict):
        raise AugmentConfigError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - {"types", "copies", "peak_limit", "cache_mb"}
    if unknown:
        raise AugmentConfigError(f"{path}: unknown keys {sorted(unknown)}")
    rtypes = raw.get("types")
    if not isinstance(rtypes, dict) or not rtypes:
        raise AugmentConfigError(f"{path}: 'types' must map noise types to their settings")
    types = {}
    for name, spec in rtypes.items():
        if name not in TYPE_FOLDER:
            raise AugmentConfigError(f"{path}: unknown noise type '{name}' "
                                     f"(known: {', '.join(NOISE_TYPES)})")
        if not isinstance(spec, dict) or "snr" not in spec:
            raise AugmentConfigError(f"{path}: types.{name} needs 'snr: [low, high]'")
        extra = set(spec) - {"snr", "speakers"}
        if extra or (name != "babble" and "speakers" in spec):
            raise AugmentConfigError(f"{path}: types.{name}: unexpected keys "
                                     f"{sorted(extra or {'speakers'})}")
        speakers = None
        if name == "babble":
            if "speakers" not in spec:
                raise AugmentConfigError(f"{path}: types.babble needs 'speakers: [low, high]'")
            speakers = _pair(path, "types.babble.speakers", spec["speakers"], int)
            if speakers[0] < 1:
                raise AugmentConfigError(f"{path}: babble needs at least 1 speaker")
        types[name] = TypeSpec(snr=_pair(path, f"types.{name}.snr", spec["snr"], float),
                               speakers=speakers)
    copies = raw.get("copies", 1)
    if not isinstance(copies, int) or not 1 <= copies <= len(types):
        raise AugmentConfigError(f"{path}: 'copies' must be an integer in 1..{len(types)} "
                                 "(each copy of an utterance gets a different noise type)")
    peak = float(raw.get("peak_limit", DEFAULT_PEAK_LIMIT))
    if not 0 < peak <= 1:
        raise AugmentConfigError(f"{path}: 'peak_limit' must be in (0, 1], got {peak}")
    cache_mb = float(raw.get("cache_mb", 512))
    if cache_mb < 0:
        raise AugmentConfigError(f"{path}: 'cache_mb' must be >= 0")
    return AugmentConfig(types=types, copies=copies, peak_limit=peak, cache_mb=cache_mb)


# ----------------------------------------------------------------------------- noise_info

@dataclass
class NoiseInfo:
    type: str
    snr: float
    files: list[tuple[str, int]]  # (path relative to the MUSAN dir, sample offset)
    gain: float = 1.0

    def format(self) -> str:
        files = ",".join(f"{quote(rel, safe='/-_.+~')}@{off}" for rel, off in self.files)
        return f"type={self.type} snr={self.snr:.2f} files={files} gain={self.gain:.6f}"

    @classmethod
    def parse(cls, text: str) -> "NoiseInfo":
        fields = {}
        for part in text.split():
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"noise_info field '{part}' is not key=value")
            fields[key] = value
        missing = {"type", "snr", "files", "gain"} - set(fields)
        if missing:
            raise ValueError(f"noise_info '{text}' lacks {sorted(missing)}")
        files = []
        for item in fields["files"].split(","):
            rel, _, off = item.rpartition("@")
            files.append((unquote(rel), int(off)))
        return cls(fields["type"], float(fields["snr"]), files, float(fields["gain"]))


def utt_rng(seed: int, purpose: str, utt: str) -> np.random.Generator:
    """A generator that depends only on (seed, purpose, utterance id)."""
    digest = hashlib.sha256(f"{seed}\0{purpose}\0{utt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


# ----------------------------------------------------------------------------- mixing

class Augmenter:
    """Draws noise for an utterance from a MUSAN dir and mixes it at a given SNR."""

    def __init__(self, musan_dir: str | Path, types: tuple[str, ...], *,
                 babble_speakers: tuple[int, int] = (3, 7),
                 peak_limit: float = DEFAULT_PEAK_LIMIT, cache_mb: float = 512):
        unknown = [t for t in types if t not in TYPE_FOLDER]
        if unknown or not types:
            raise ValueError(f"unknown noise types {unknown} (known: {', '.join(NOISE_TYPES)})")
        self.musan_dir = Path(musan_dir)
        self.types = tuple(types)
        folders = tuple(sorted({TYPE_FOLDER[t] for t in types}))
        self.listing = list_musan(musan_dir, folders)
        self.bank = NoiseBank(musan_dir, check_musan_files(musan_dir, self.listing),
                              cache_mb=cache_mb)
        self.babble_speakers = babble_speakers
        self.peak_limit = peak_limit
        # babble talkers: the speech files grouped by speaker (file2spk, as written for a
        # training set's own voices); a file not listed is a speaker of its own, as in MUSAN
        self.talkers: dict[str, list[str]] = {}
        if "babble" in types:
            try:
                file2spk = read_file2spk(self.musan_dir / "speech")
            except ValueError as e:
                raise MusanError(str(e)) from None
            for rel in self.listing["speech"]:
                self.talkers.setdefault(file2spk.get(rel, rel), []).append(rel)
            # with speakers named, an utterance's own is never among its talkers
            usable = len(self.talkers) - (1 if file2spk else 0)
            if usable < babble_speakers[1]:
                raise MusanError(
                    f"{self.musan_dir / 'speech'}: babble needs up to {babble_speakers[1]} different "
                    f"speakers but only {usable} can be drawn (add speech or lower "
                    "types.babble.speakers in the augment config)")

    def _draw_files(self, kind: str, length: int, rng: np.random.Generator,
                    speaker: str | None = None) -> list[tuple[str, int]]:
        files = self.listing[TYPE_FOLDER[kind]]
        if kind == "babble":
            lo, hi = self.babble_speakers
            k = int(rng.integers(lo, hi + 1))
            others = [t for t in self.talkers if t != speaker]
            picks = rng.choice(len(others), size=k, replace=False)
            chosen = []
            for i in picks:  # one file of each talker (MUSAN: the talker is the file)
                voices = self.talkers[others[int(i)]]
                chosen.append(voices[int(rng.integers(len(voices)))] if len(voices) > 1 else voices[0])
        else:
            chosen = [files[int(rng.integers(len(files)))]]
        return [(rel, random_offset(self.bank.frames[rel], length, rng)) for rel in chosen]

    def noise_for(self, files: list[tuple[str, int]], kind: str, length: int) -> np.ndarray:
        """The noise signal (before SNR scaling) that these files and offsets give."""
        segs = [self.bank.read(rel, off, length) for rel, off in files]
        return make_babble(segs) if kind == "babble" else segs[0]

    def draw_noise(self, kind: str, length: int, rng: np.random.Generator,
                   speaker: str | None = None) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """Random noise of ``kind`` and ``length`` samples, redrawing silent segments; babble
        talkers are never ``speaker``."""
        for _ in range(MAX_DRAWS):
            files = self._draw_files(kind, length, rng, speaker)
            segs = [self.bank.read(rel, off, length) for rel, off in files]
            if not any(is_silent(s) for s in segs):
                return (make_babble(segs) if kind == "babble" else segs[0]), files
        last = ",".join(f"{rel}@{off}" for rel, off in files)
        raise MixError(f"{self.musan_dir / TYPE_FOLDER[kind]}: {MAX_DRAWS} random draws of "
                       f"{kind} all gave silent segments (RMS below -80 dBFS; last: {last}); "
                       "are these recordings silent?")

    def mix(self, speech: np.ndarray, kind: str, snr: float, rng: np.random.Generator,
            speaker: str | None = None) -> tuple[Mixture, NoiseInfo]:
        if is_silent(speech):
            raise MixError("speech is silent (RMS below -80 dBFS); the SNR is undefined")
        noise, files = self.draw_noise(kind, speech.size, rng, speaker)
        mixed = mix_at_snr(speech, noise, snr, peak_limit=self.peak_limit)
        return mixed, NoiseInfo(kind, snr, files, mixed.gain)

    def rebuild(self, speech: np.ndarray, info: NoiseInfo) -> Mixture:
        """Recreate a mixture from its noise_info line (checks that noise_info is complete)."""
        noise = self.noise_for(info.files, info.type, speech.size)
        return mix_at_snr(speech, noise, info.snr, peak_limit=self.peak_limit)


# ----------------------------------------------------------------------------- data dirs

@dataclass
class _Job:
    """What a worker process needs; plain data so it pickles under any start method."""
    mode: str  # "train" (random type and SNR per copy) or "fixed" (one copy at a fixed SNR)
    musan_dir: str
    wav_dir: str
    seed: int
    types: tuple[str, ...]
    config: AugmentConfig
    snr: float | None = None


_WORKER: dict = {}


def _init_worker(job: _Job) -> None:
    cfg = job.config
    babble = cfg.types.get("babble")
    speakers = babble.speakers if babble is not None and babble.speakers else (3, 7)
    _WORKER["job"] = job
    _WORKER["aug"] = Augmenter(job.musan_dir, job.types, babble_speakers=speakers,
                               peak_limit=cfg.peak_limit, cache_mb=cfg.cache_mb)


def _process(task: tuple[str, str, Segment | None, str]) -> list[tuple[str, str, str, float]]:
    """Mix one utterance; returns (noisy utt, wav path, noise_info, gain) per copy."""
    utt, entry, segment, spk = task
    job: _Job = _WORKER["job"]
    aug: Augmenter = _WORKER["aug"]
    speech = load_audio(utt, entry, segment, min_seconds=MIN_UTTERANCE_SECONDS)
    if job.mode == "train":
        rng = utt_rng(job.seed, "augment", utt)
        kinds = [job.types[int(i)] for i in
                 rng.choice(len(job.types), size=job.config.copies, replace=False)]
        plan = []
        for kind in kinds:
            lo, hi = job.config.types[kind].snr
            plan.append((f"{utt}-{kind}", kind, round(float(rng.uniform(lo, hi)), 2)))
    else:
        # SNR is not drawn, so every SNR level of a test set gets the same noise per utterance
        rng = utt_rng(job.seed, "noisy_set", utt)
        plan = [(utt, job.types[int(rng.integers(len(job.types)))], job.snr)]
    out = []
    for noisy, kind, snr in plan:
        try:
            mixed, info = aug.mix(speech, kind, snr, rng, speaker=spk)
        except MixError as e:
            raise MixError(f"utterance '{utt}' ({entry}): {e}") from None
        path = Path(job.wav_dir) / spk / f"{noisy}.wav"
        write_wav(path, mixed.mixture)
        out.append((noisy, str(path), info.format(), mixed.gain))
    return out


def _process_in_worker(task):
    """_process, with any error made picklable: an exception that cannot be unpickled in the
    parent makes multiprocessing.Pool hang instead of failing."""
    try:
        return _process(task)
    except Exception as e:
        try:
            pickle.loads(pickle.dumps(e))
        except Exception:
            raise RuntimeError(f"{type(e).__name__}: {e}") from None
        raise


def _check_ids(src: KaldiDataDir, src_path: Path) -> None:
    for utt, spk in src.utt2spk.items():
        if "/" in utt or "/" in spk or utt.startswith("."):
            raise DataDirError(f"{src_path / 'utt2spk'}: ids '{utt}' / '{spk}' cannot name a "
                             "wav file (contain '/' or start with '.')")


@dataclass
class RunSummary:
    n_src: int
    n_out: int
    per_type: dict[str, int] = field(default_factory=dict)
    n_gain: int = 0  # mixtures scaled down to avoid clipping
    seconds: float = 0.0

    def line(self, tool: str, dst: Path) -> str:
        types = ", ".join(f"{k} {v}" for k, v in sorted(self.per_type.items()))
        return (f"{tool}: {self.n_src} utterances -> {self.n_out} noisy in {dst} ({types}); "
                f"anti-clipping gain on {self.n_gain}; {self.seconds:.1f} s")


def _run(job: _Job, src: str | Path, dst: str | Path, nj: int) -> RunSummary:
    start = time.time()
    src_path, dst = Path(src), Path(dst)
    data = load_data_dir(src_path, require_text=False)
    _check_ids(data, src_path)
    _init_worker(job)  # validates the MUSAN dir and config here, before any worker starts
    tasks = [(u, *data.audio_entry(u), data.utt2spk[u]) for u in data.utt_ids]
    if nj < 1:
        raise ValueError(f"--nj must be >= 1, got {nj}")
    nj = min(nj, len(tasks))
    bar = tqdm(total=len(tasks), desc=f"mixing {dst.name}", unit="utt", file=sys.stderr,
               dynamic_ncols=True)
    results: list[tuple[str, list]] = []
    if nj == 1:
        for task in tasks:
            results.append((task[0], _process(task)))
            bar.update()
    else:
        with mp.get_context().Pool(nj, initializer=_init_worker, initargs=(job,)) as pool:
            for task, res in zip(tasks, pool.imap(_process_in_worker, tasks, chunksize=8)):
                results.append((task[0], res))
                bar.update()
    bar.close()

    out = KaldiDataDir(wav_scp={}, utt2spk={}, text={},
                       extra={"utt2clean": {}, "noise_info": {}})
    summary = RunSummary(n_src=len(tasks), n_out=0)
    for utt, copies in results:
        for noisy, path, info, gain in copies:
            out.wav_scp[noisy] = path
            out.utt2spk[noisy] = data.utt2spk[utt]
            if utt in data.text:
                out.text[noisy] = data.text[utt]
            out.extra["utt2clean"][noisy] = utt
            out.extra["noise_info"][noisy] = info
            kind = info.split()[0].removeprefix("type=")
            summary.per_type[kind] = summary.per_type.get(kind, 0) + 1
            summary.n_gain += gain < 1.0
            summary.n_out += 1
    write_data_dir(dst, out)
    summary.seconds = time.time() - start
    return summary


def augment_data_dir(src: str | Path, dst: str | Path, musan_dir: str | Path,
                     wav_dir: str | Path, config: AugmentConfig, *, seed: int = 0,
                     nj: int = 1) -> RunSummary:
    """Noisy copies ``<utt>-<type>`` of every utterance, type and SNR drawn per the config."""
    job = _Job("train", str(musan_dir), str(wav_dir), seed, tuple(config.types), config)
    return _run(job, src, dst, nj)


def make_noisy_set(src: str | Path, dst: str | Path, musan_dir: str | Path,
                   wav_dir: str | Path, snr: float, config: AugmentConfig, *,
                   types: tuple[str, ...] = NOISE_TYPES, seed: int = 0,
                   nj: int = 1) -> RunSummary:
    """The same utterance ids mixed at a fixed SNR, noise type drawn uniformly from ``types``.

    The SNR is rounded to 0.01 dB, the resolution noise_info records.
    """
    if not np.isfinite(snr):
        raise ValueError(f"SNR must be finite, got {snr}")
    job = _Job("fixed", str(musan_dir), str(wav_dir), seed, tuple(types), config,
               snr=round(float(snr), 2))
    return _run(job, src, dst, nj)
