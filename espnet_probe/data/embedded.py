"""The embedded default corpus: English read speech synthesized offline with espeak-ng.

espeak-ng comes from the ``espeakng-loader`` wheel (shared library plus voice data), driven
through ctypes in synchronous mode with a callback that collects the int16 samples; no system
``espeak-ng`` is needed. Each corpus voice is a recipe (English dialect, voice variant, pitch,
pitch range, speaking rate) listed in ``VOICES`` and recorded in ``speakers.tsv``.

Transcripts are what the ASR sees: upper-case A-Z, apostrophes and single spaces (see
``espnet_probe.data.sentences``). Audio is resampled from espeak's native rate to 16 kHz,
trimmed, padded with 0.1-0.35 s of near-silence (a -80 dBFS dither, so no frame is digital
zero) and peak-normalised to a random peak between 0.35 and 0.9 of full scale.

Determinism: espeak-ng keeps internal state (e.g. its pitch-flutter phase) across calls and
even across espeak_Terminate, so the same text comes out slightly differently on a second call.
Each voice is therefore synthesized, in a fixed order, in a freshly started worker process:
the result then depends only on the seed and the recipe, never on ``--nj`` or scheduling.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import re
import sys
import time
from dataclasses import asdict, dataclass
from math import gcd
from pathlib import Path

import numpy as np

from espnet_probe.audio.io import write_wav
from espnet_probe.data.sentences import sentence_pools
from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.freshness import Stamp
from espnet_probe.utils.kaldi_dir import KaldiDataDir, write_data_dir

SAMPLE_RATE = 16000
CORPUS_VERSION = 1  # bump when anything changes the generated audio or text

# espeak-ng API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)

SPLITS = ("train", "dev", "test", "babble")


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng dialect + variant with prosody settings."""

    spk: str
    split: str      # train / dev / test, or babble (noise pool only)
    gender: str     # m / f, as the variant sounds
    dialect: str    # espeak-ng voice file under espeak-ng-data/lang (case-insensitive)
    variant: str    # espeak-ng variant under espeak-ng-data/voices/!v
    pitch: int      # 0-100, espeak default 50 (scales the variant's base pitch)
    range: int      # 0-100, espeak default 50 (intonation range)
    rate: int       # words per minute, espeak default 175

    @property
    def name(self) -> str:
        return f"{self.dialect}+{self.variant}"


# Dialect "en" is British English. Each split mixes genders and dialects; train and test both
# have voices of espeak's Klatt synthesizer (klatt*). No dev or test variant occurs in train.
# The babble voices only need to differ from each other: they end up as background noise.
VOICES: tuple[Voice, ...] = (
    Voice("spk01", "train", "m", "en-us", "m1", 40, 50, 165),
    Voice("spk02", "train", "f", "en-us", "f3", 55, 60, 170),
    Voice("spk03", "train", "m", "en", "m3", 35, 45, 155),
    Voice("spk04", "train", "f", "en", "f1", 60, 70, 160),
    Voice("spk05", "train", "m", "en-gb-scotland", "m2", 45, 40, 150),
    Voice("spk06", "train", "f", "en-gb-x-rp", "f4", 50, 55, 175),
    Voice("spk07", "train", "m", "en-029", "m6", 50, 60, 160),
    Voice("spk08", "train", "f", "en-us-nyc", "f2", 45, 65, 185),
    Voice("spk09", "train", "m", "en-gb-x-gbclan", "m7", 30, 35, 170),
    Voice("spk10", "train", "f", "en-gb-x-gbcwmd", "f5", 65, 50, 150),
    Voice("spk11", "train", "m", "en-us", "klatt3", 45, 50, 180),
    Voice("spk12", "train", "f", "en-gb-x-rp", "Annie", 55, 60, 165),
    Voice("spk13", "train", "m", "en-029", "travis", 50, 45, 170),
    Voice("spk14", "train", "f", "en-us-nyc", "belinda", 50, 55, 160),
    Voice("spk15", "dev", "m", "en-gb-x-gbcwmd", "m4", 40, 55, 165),
    Voice("spk16", "dev", "f", "en-gb-scotland", "steph", 55, 45, 170),
    Voice("spk17", "test", "m", "en-us-nyc", "m8", 40, 50, 175),
    Voice("spk18", "test", "f", "en-gb-x-gbclan", "linda", 55, 65, 165),
    Voice("spk19", "test", "m", "en-gb-x-rp", "klatt2", 50, 40, 155),
    Voice("spk20", "test", "f", "en-us", "aunty", 45, 55, 170),
    Voice("spk21", "babble", "f", "en-029", "f4", 50, 60, 180),
    Voice("spk22", "babble", "m", "en", "m5", 45, 50, 175),
    Voice("spk23", "babble", "m", "en-us", "john", 50, 55, 160),
    Voice("spk24", "babble", "f", "en-gb-scotland", "f2", 60, 50, 165),
)


# ---------------------------------------------------------------- espeak-ng through ctypes

class EspeakError(RuntimeError):
    """espeak-ng could not be loaded, could not find a voice or failed to synthesize."""


def espeak_paths() -> tuple[str, str]:
    """(shared library, data dir) shipped by the espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakError("the 'espeakng-loader' package is not installed "
                          "(it is in tools/requirements.txt; run tools/install.sh)") from None
    lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    if not Path(lib).is_file():
        raise EspeakError(f"espeak-ng library not found at {lib} (reinstall espeakng-loader)")
    return lib, data


def available_dialects(data_dir: str | None = None) -> dict[str, str]:
    """Lower-cased English voice names -> their file name in espeak-ng-data/lang/gmw."""
    data_dir = data_dir or espeak_paths()[1]
    return {p.name.lower(): p.name for p in (Path(data_dir) / "lang" / "gmw").glob("en*")
            if p.is_file()}


def available_variants(data_dir: str | None = None) -> list[str]:
    data_dir = data_dir or espeak_paths()[1]
    return sorted(p.name for p in (Path(data_dir) / "voices" / "!v").iterdir() if p.is_file())


def check_voices(voices=VOICES, data_dir: str | None = None) -> None:
    """espeak-ng silently falls back to a default for an unknown variant: refuse instead."""
    dialects, variants = available_dialects(data_dir), set(available_variants(data_dir))
    for v in voices:
        if v.dialect.lower() not in dialects:
            raise EspeakError(f"voice {v.spk}: no English dialect '{v.dialect}' in espeak-ng "
                              f"data (have: {', '.join(sorted(dialects))})")
        if v.variant not in variants:
            raise EspeakError(f"voice {v.spk}: no variant '{v.variant}' in espeak-ng data")


class Espeak:
    """The process-wide espeak-ng engine (the library is a singleton; so is this)."""

    _instance: "Espeak | None" = None

    def __init__(self):
        lib_path, self.data_dir = espeak_paths()
        lib = ctypes.CDLL(lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_dir.encode(),
                                     _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (code {rate}) with data at "
                              f"{self.data_dir}")
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference: C holds a pointer
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib = lib
        self.libc = ctypes.CDLL(None)  # breath noise of some variants draws from libc rand()

    @classmethod
    def get(cls) -> "Espeak":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, wav, n, _events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = carry on

    def synth(self, text: str, voice: Voice, noise_seed: int = 0) -> np.ndarray:
        """int16 samples at ``self.sample_rate`` of ``text`` spoken by ``voice``."""
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise EspeakError(f"voice {voice.spk}: espeak-ng has no voice '{voice.name}'")
        for param, value in ((_PARAM_RATE, voice.rate), (_PARAM_PITCH, voice.pitch),
                             (_PARAM_RANGE, voice.range)):
            if self.lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise EspeakError(f"voice {voice.spk}: espeak-ng rejected parameter {param}="
                                  f"{value}")
        self.lib.espeak_ng_SetRandSeed(noise_seed)
        self.libc.srand(ctypes.c_uint(noise_seed))
        self._chunks = []
        buf = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None,
                                    None)
        if err != 0:
            raise EspeakError(f"voice {voice.spk}: espeak_Synth failed (code {err}) "
                              f"on '{text}'")
        if not self._chunks:
            raise EspeakError(f"voice {voice.spk}: espeak-ng produced no audio for '{text}'")
        return np.concatenate(self._chunks)


# ---------------------------------------------------------------- audio post-processing

def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    x = samples.astype(np.float64) / 32768.0
    if rate == SAMPLE_RATE:
        return x
    g = gcd(SAMPLE_RATE, rate)
    return resample_poly(x, SAMPLE_RATE // g, rate // g)


def trim(x: np.ndarray, floor_db: float = -45.0, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing samples quieter than ``floor_db`` below the peak (keep a margin)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (floor_db / 20))
    m = int(margin_s * SAMPLE_RATE)
    return x[max(loud[0] - m, 0):loud[-1] + 1 + m]


def finish(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pad with random-length quiet, add a faint dither, scale to a random safe peak."""
    lead = int(rng.uniform(0.10, 0.30) * SAMPLE_RATE)
    tail = int(rng.uniform(0.10, 0.35) * SAMPLE_RATE)
    x = np.concatenate([np.zeros(lead), trim(x), np.zeros(tail)])
    x = x / np.max(np.abs(x))
    x = x + rng.normal(0.0, 1e-4, x.size)  # -80 dBFS: no digital-zero frames
    peak = rng.uniform(0.35, 0.9)
    return (x * (peak / np.max(np.abs(x)))).astype(np.float32)


def synthesize(text: str, voice: Voice, rng: np.random.Generator | None = None) -> np.ndarray:
    """16 kHz float32 audio of ``text`` in ``voice``, padded and normalised as in the corpus."""
    eng = Espeak.get()
    rng = rng or np.random.default_rng(0)
    raw = eng.synth(text.lower(), voice, noise_seed=int(rng.integers(2**31)))
    return finish(to_16k(raw, eng.sample_rate), rng)


# ---------------------------------------------------------------- the corpus

@dataclass(frozen=True)
class CorpusConfig:
    out: str                 # data root: <out>/{train,dev,test}, <out>/local/embedded
    seed: int = 0
    utts_per_voice: int = 32
    babble_utts: int = 8
    babble_dir: str = ""     # default <out>/local/noise/speech/espeak

    def resolved(self) -> "CorpusConfig":
        out = Path(self.out).resolve()
        babble = Path(self.babble_dir).resolve() if self.babble_dir else \
            out / "local" / "noise" / "speech" / "espeak"
        return CorpusConfig(str(out), self.seed, self.utts_per_voice, self.babble_utts,
                            str(babble))

    def fingerprint(self) -> dict:
        """What the generated files depend on (the settings of their stamp)."""
        return {"version": CORPUS_VERSION, **asdict(self),
                "voices": [asdict(v) for v in VOICES]}


@dataclass(frozen=True)
class Utterance:
    utt: str
    spk: str
    text: str
    wav: str
    index: int  # position in its voice's fixed synthesis order


def plan_corpus(cfg: CorpusConfig) -> dict[str, list[Utterance]]:
    """Every utterance of every voice, by speaker, with its sentence and output path."""
    if cfg.utts_per_voice < 1 or cfg.babble_utts < 0:
        raise ValueError(f"need utts_per_voice >= 1 and babble_utts >= 0, got "
                         f"{cfg.utts_per_voice} and {cfg.babble_utts}")
    per_voice = {"train": cfg.utts_per_voice, "dev": cfg.utts_per_voice,
                 "test": cfg.utts_per_voice, "babble": cfg.babble_utts}
    counts = {s: per_voice[s] * sum(v.split == s for v in VOICES) for s in SPLITS}
    pools = sentence_pools(counts, cfg.seed)
    taken = dict.fromkeys(SPLITS, 0)
    wav_root = Path(cfg.out) / "local" / "embedded" / "wav"
    plan: dict[str, list[Utterance]] = {}
    for v in VOICES:
        n = per_voice[v.split]
        texts = pools[v.split][taken[v.split]:taken[v.split] + n]
        taken[v.split] += n
        utts = []
        for i, text in enumerate(texts):
            utt = f"{v.spk}-{i + 1:04d}"
            folder = Path(cfg.babble_dir) if v.split == "babble" else wav_root / v.spk
            utts.append(Utterance(utt, v.spk, text, str(folder / f"{utt}.wav"), i))
        plan[v.spk] = utts
    return plan


def _utt_rng(seed: int, spk: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(spk[3:]), index])


def _synth_voice(job: tuple[int, Voice, list[Utterance]]) -> tuple[str, dict[str, int]]:
    """Worker: synthesize one voice's utterances in order; returns utt -> num samples."""
    seed, voice, utts = job
    lengths = {}
    for u in utts:
        try:
            wav = synthesize(u.text, voice, _utt_rng(seed, voice.spk, u.index))
        except EspeakError as e:
            raise EspeakError(f"utterance {u.utt}: {e}") from None
        write_wav(u.wav, wav, SAMPLE_RATE)
        lengths[u.utt] = wav.size
    return voice.spk, lengths


def _wav_frames(path: str) -> int:
    import soundfile as sf

    return sf.info(path).frames


def _write_speakers_tsv(path: Path, plan: dict[str, list[Utterance]]) -> None:
    fields = ["spk", "split", "gender", "dialect", "variant", "espeak_voice", "pitch", "range",
              "rate", "num_utts"]
    with atomic_open(path) as f:
        f.write("\t".join(fields) + "\n")
        for v in VOICES:
            row = [v.spk, v.split, v.gender, v.dialect, v.variant, v.name, v.pitch, v.range,
                   v.rate, len(plan[v.spk])]
            f.write("\t".join(map(str, row)) + "\n")


def read_speakers_tsv(path: str | Path) -> list[dict[str, str]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


def _remove_strays(folder: Path, keep: set[str], pattern: str) -> None:
    """Delete our own files left from an earlier configuration (never anything else)."""
    if not folder.is_dir():
        return
    rx = re.compile(pattern)
    for p in folder.rglob("*"):
        if p.is_file() and rx.fullmatch(p.name) and str(p) not in keep:
            p.unlink()
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def _outputs_complete(cfg: CorpusConfig, plan: dict[str, list[Utterance]]) -> bool:
    out = Path(cfg.out)
    if not all((out / s / "wav.scp").is_file() for s in ("train", "dev", "test")):
        return False
    return all(Path(u.wav).is_file() for utts in plan.values() for u in utts)


def build_corpus(cfg: CorpusConfig, nj: int = 1, progress: bool = True) -> dict:
    """Generate (or keep, if already complete for these settings) the embedded corpus.

    Returns a summary dict: voices, utterances, hours, seconds, skipped.
    """
    from tqdm import tqdm

    t0 = time.time()
    cfg = cfg.resolved()
    out = Path(cfg.out)
    local = out / "local" / "embedded"
    stamp, settings = Stamp(local), cfg.fingerprint()
    plan = plan_corpus(cfg)
    n_utts = sum(len(u) for u in plan.values())

    if stamp.state(settings) == "done":
        if _outputs_complete(cfg, plan):
            return {**stamp.summary(), "seconds": time.time() - t0, "skipped": True}
        stamp.finished.unlink()  # files went missing: make it again

    check_voices()
    # Wav files are written atomically, so a voice whose files all exist from an interrupted
    # run with identical settings is complete; anything else is (re)synthesized from scratch
    # (over the old files, and the strays are removed below: nothing needs wiping first).
    trusted = stamp.begin(settings, owned=()) == "resume"

    todo = [v for v in VOICES
            if not (trusted and all(Path(u.wav).is_file() for u in plan[v.spk]))]
    lengths: dict[str, int] = {}
    for v in VOICES:
        if v not in todo:
            lengths.update({u.utt: _wav_frames(u.wav) for u in plan[v.spk]})
    bar = tqdm(total=sum(len(plan[v.spk]) for v in todo), desc="espeak-ng voices",
               unit="utt", disable=not progress, file=sys.stderr)
    if todo:
        # forkserver + one task per child: every voice starts from a fresh espeak-ng state.
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", "scipy.signal", "soundfile",
                                    "espnet_probe.audio.io"])
        jobs = [(cfg.seed, v, plan[v.spk]) for v in todo]
        with ctx.Pool(processes=max(1, min(nj, len(jobs))), maxtasksperchild=1) as pool:
            for spk, lens in pool.imap_unordered(_synth_voice, jobs):
                lengths.update(lens)
                bar.update(len(lens))
    bar.close()

    keep = {u.wav for utts in plan.values() for u in utts}
    ours = r"\.?spk\d+-\d+\.wav(\.[\w.-]+\.tmp)?"  # our wavs and temp files of killed writes
    _remove_strays(local / "wav", keep, ours)
    _remove_strays(Path(cfg.babble_dir), keep, ours)

    for split in ("train", "dev", "test"):
        utts = [u for v in VOICES if v.split == split for u in plan[v.spk]]
        data = KaldiDataDir(
            wav_scp={u.utt: u.wav for u in utts},
            utt2spk={u.utt: u.spk for u in utts},
            text={u.utt: u.text for u in utts},
            extra={"utt2dur": {u.utt: f"{lengths[u.utt] / SAMPLE_RATE:.3f}" for u in utts}},
        )
        write_data_dir(out / split, data)
        with atomic_open(out / split / "spk2gender") as f:
            for v in VOICES:
                if v.split == split:
                    f.write(f"{v.spk} {v.gender}\n")
    _write_speakers_tsv(local / "speakers.tsv", plan)

    hours = sum(lengths.values()) / SAMPLE_RATE / 3600
    summary = {"voices": len(VOICES), "utterances": n_utts,
               "per_split": {s: sum(len(plan[v.spk]) for v in VOICES if v.split == s)
                             for s in SPLITS},
               "hours": round(hours, 4)}
    stamp.finish(settings, **summary)
    return {**summary, "seconds": time.time() - t0, "skipped": False}
