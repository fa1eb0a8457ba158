"""Bring an existing Kaldi data dir into the recipe: validate it, check its audio, copy it.

Without ``fix`` the input must already be a valid data dir (sorted, consistent, spk2utt
present) and its files are copied byte for byte. With ``fix`` (like Kaldi's fix_data_dir.sh)
the tables are sorted, utterances missing from any of wav.scp / segments / text / utt2spk are
dropped, recordings no segment uses are dropped, and spk2utt is regenerated; every change is
reported. Duplicate ids stay an error either way: which copy is right cannot be guessed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from espnet_probe.audio.io import MIN_UTTERANCE_SECONDS, SAMPLE_RATE, AudioError, load_audio
from espnet_probe.utils.fileio import atomic_dir
from espnet_probe.utils.kaldi_dir import (BOM, DataDirError, KaldiDataDir, id_list, load_data_dir,
                                         read_table, write_table)

CORE_FILES = ("wav.scp", "utt2spk", "spk2utt", "text", "segments")
PER_UTT_EXTRA = ("utt2gender", "utt2dur")  # copied and id-checked when present
PER_SPK_EXTRA = ("spk2gender",)
MAX_REPORTED = 10
# load_data_dir messages for problems fix_tables repairs
FIXABLE = ("not sorted", "mismatched ids", "spk2utt", "names recording")
# A segment may run a little past the end of its recording (rounding of times), as Kaldi allows.
MAX_OVERSHOOT_S = 0.5


class AudioCheckError(DataDirError):
    """Some utterances have unusable audio; the message lists them."""


def format_problems(what: str, problems: list[str], limit: int = MAX_REPORTED) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{what}: {len(problems)} problem(s):\n  {shown}{more}"


@dataclass
class ImportReport:
    n_utts: int = 0
    n_spk: int = 0
    n_recordings: int = 0
    changes: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    audio_checked: int = 0
    audio_seconds: float = 0.0
    source: str = ""


# ----------------------------------------------------------------------------- fixing

def _sorted_check(name: str, table: dict[str, str], changes: list[str]) -> dict[str, str]:
    keys = list(table)
    if keys != sorted(keys):
        changes.append(f"{name}: sorted")
    return dict(sorted(table.items()))


def fix_tables(src: Path, *, require_text: bool = True) -> tuple[dict[str, dict[str, str]],
                                                                   list[str]]:
    """Read the tables of ``src`` leniently and make them consistent; returns (tables, changes)."""
    changes: list[str] = []
    tables: dict[str, dict[str, str]] = {}
    def read(name: str, **kwargs) -> dict[str, str]:
        table = read_table(src / name, strip_bom=True, **kwargs)
        if (src / name).read_bytes().startswith(BOM.encode()):
            changes.append(f"{name}: byte-order mark removed")
        return _sorted_check(name, table, changes)

    for name in ("wav.scp", "utt2spk"):
        tables[name] = read(name)
    if (src / "text").is_file():
        tables["text"] = read("text", allow_empty_value=True)
    elif require_text:
        raise DataDirError(f"{src / 'text'}: file not found (transcripts are required here)")
    if (src / "segments").is_file():
        tables["segments"] = read("segments")
    for name in PER_UTT_EXTRA + PER_SPK_EXTRA:
        if (src / name).is_file():
            tables[name] = read(name)

    # utterances must appear in every per-utterance table that exists
    audio_ids = set(tables["segments"]) if "segments" in tables else set(tables["wav.scp"])
    if "segments" in tables:  # segments naming unknown recordings lose their utterance
        bad = sorted(u for u, v in tables["segments"].items()
                     if v.split()[0] not in tables["wav.scp"])
        if bad:
            changes.append(f"segments: dropped {len(bad)} segment(s) whose recording is not in "
                           f"wav.scp: {id_list(bad)}")
            audio_ids -= set(bad)
    per_utt = {"utt2spk": set(tables["utt2spk"]), "audio": audio_ids}
    if "text" in tables:
        per_utt["text"] = set(tables["text"])
    keep = set.intersection(*per_utt.values())
    for name, ids in per_utt.items():
        lost = sorted(ids - keep)
        if lost:
            label = ("segments" if "segments" in tables else "wav.scp") if name == "audio" else name
            changes.append(f"{label}: dropped {len(lost)} utterance(s) missing from another file: "
                           f"{id_list(lost)}")
    # dropped from every table below, and reported once, as what they are
    text = tables.get("text", {})
    empty = sorted(u for u in keep if u in text and not text[u])
    if empty:
        changes.append(f"text: dropped {len(empty)} utterance(s) with an empty transcript: "
                       f"{id_list(empty)}")
        keep -= set(empty)
    if not keep:
        raise DataDirError(f"{src}: no utterance is in all of wav.scp/segments, utt2spk, text")

    def restrict(name: str) -> None:
        tables[name] = {u: v for u, v in tables[name].items() if u in keep}

    for name in ("utt2spk", "text", "segments") + PER_UTT_EXTRA:
        if name in tables:
            restrict(name)
    if "segments" in tables:
        used = {v.split()[0] for v in tables["segments"].values()}
        unused = sorted(set(tables["wav.scp"]) - used)
        if unused:
            changes.append(f"wav.scp: dropped {len(unused)} recording(s) no segment uses: "
                           f"{id_list(unused)}")
        tables["wav.scp"] = {r: v for r, v in tables["wav.scp"].items() if r in used}
    else:
        restrict("wav.scp")
    for name in PER_UTT_EXTRA:
        if name in tables and set(tables[name]) != keep:
            changes.append(f"{name}: dropped, it does not cover every utterance")
            del tables[name]
    spks = set(tables["utt2spk"].values())
    if "spk2gender" in tables:
        if not spks <= set(tables["spk2gender"]):
            changes.append("spk2gender: dropped, it does not cover every speaker")
            del tables["spk2gender"]
        else:
            tables["spk2gender"] = {s: g for s, g in tables["spk2gender"].items() if s in spks}

    spk2utt: dict[str, list[str]] = {}
    for utt, spk in tables["utt2spk"].items():
        spk2utt.setdefault(spk, []).append(utt)
    new_spk2utt = {s: " ".join(sorted(u)) for s, u in sorted(spk2utt.items())}
    if (src / "spk2utt").is_file():
        old = read_table(src / "spk2utt")
        if old != new_spk2utt or list(old) != list(new_spk2utt):
            changes.append("spk2utt: regenerated from utt2spk")
    else:
        changes.append("spk2utt: created from utt2spk")
    tables["spk2utt"] = new_spk2utt
    return tables, changes


# ----------------------------------------------------------------------------- audio check

def _check_entry(entry: str, utts: list, sample_rate: int) -> tuple[list[str], float]:
    """Load one wav.scp entry once; check it, and every segment cut from it.

    ``utts`` is [(utt, None)] for a whole-file utterance or [(utt, Segment), ...].
    """
    seg0 = utts[0][1]
    try:
        wav = load_audio(utts[0][0] if seg0 is None else seg0.recording, entry, None,
                         sample_rate, min_seconds=MIN_UTTERANCE_SECONDS if seg0 is None else 0.0)
    except AudioError as e:
        if seg0 is None:
            return [str(e)], 0.0
        return [f"recording '{seg0.recording}' ({e.source}), used by utterance(s) "
                f"{id_list([u for u, _ in utts], 3)}: {e.reason}"], 0.0
    dur = wav.size / sample_rate
    if seg0 is None:
        return [], dur
    problems, total = [], 0.0
    for utt, seg in utts:
        if seg.start >= dur:
            problems.append(f"utterance '{utt}' ({entry}): segment starts at {seg.start:.2f} s, "
                            f"after the recording ends ({dur:.2f} s)")
        elif min(seg.end, dur) - seg.start < MIN_UTTERANCE_SECONDS:
            problems.append(f"utterance '{utt}' ({entry}): segment of "
                            f"{min(seg.end, dur) - seg.start:.3f} s; an utterance needs at least "
                            f"{MIN_UTTERANCE_SECONDS:g} s")
        elif seg.end > dur + MAX_OVERSHOOT_S:
            problems.append(f"utterance '{utt}' ({entry}): segment ends at {seg.end:.2f} s, "
                            f"past the recording's end ({dur:.2f} s)")
        else:
            total += min(seg.end, dur) - seg.start
    return problems, total


def check_audio(data: KaldiDataDir, *, nj: int = 1,
                sample_rate: int = SAMPLE_RATE) -> tuple[list[str], float]:
    """Every utterance's audio through ``load_audio``; returns (problems, seconds of audio).

    With segments, each recording is read once (a pipe runs once) and each segment is checked
    against its length. All problems are collected, not just the first.
    """
    if data.segments is None:
        jobs = [(data.wav_scp[u], [(u, None)]) for u in data.utt_ids]
    else:
        by_rec: dict[str, list] = {}
        for utt in data.utt_ids:
            seg = data.segments[utt]
            by_rec.setdefault(seg.recording, []).append((utt, seg))
        jobs = [(data.wav_scp[rec], utts) for rec, utts in sorted(by_rec.items())]
    problems: list[str] = []
    seconds = 0.0
    unit = "utt" if data.segments is None else "recording"
    # threads suffice: decoding happens in libsndfile or a child process, outside the GIL
    with ThreadPoolExecutor(max(1, nj)) as pool, \
            tqdm(total=len(jobs), desc="check audio", unit=unit, file=sys.stderr,
                 leave=False) as bar:
        for probs, secs in pool.map(lambda j: _check_entry(j[0], j[1], sample_rate), jobs):
            problems += probs
            seconds += secs
            bar.update()
    return problems, seconds


# ----------------------------------------------------------------------------- import

def _check_encoding(src: Path, fix: bool) -> list[str]:
    """Tables must be UTF-8; CRLF endings would be copied into files Kaldi tools misread."""
    crlf = []
    for name in CORE_FILES + PER_UTT_EXTRA + PER_SPK_EXTRA:
        if not (src / name).is_file():
            continue
        raw = (src / name).read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise DataDirError(f"{src / name}:{line}: not UTF-8 text ({e.reason}); convert it, "
                               "e.g. with iconv") from None
        if b"\r\n" in raw:
            crlf.append(name)
    if crlf and not fix:
        raise DataDirError(f"{src}: Windows (CRLF) line endings in {', '.join(crlf)} "
                           "(import with --fix to rewrite them)")
    return [f"{name}: CRLF line endings rewritten" for name in crlf]


def import_data_dir(src: str | Path, dst: str | Path, *, fix: bool = False,
                    audio_check: bool = True, require_text: bool = True, nj: int = 1,
                    sample_rate: int = SAMPLE_RATE) -> ImportReport:
    """Validate ``src`` (and its audio) and copy it to ``dst`` atomically; see module doc."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataDirError(f"{src}: data directory not found")
    if src.resolve() == dst.resolve():
        raise DataDirError(f"{src}: source and destination are the same directory")
    report = ImportReport(source=str(src))
    present = {p.name for p in src.iterdir() if p.is_file()}
    known = set(CORE_FILES + PER_UTT_EXTRA + PER_SPK_EXTRA)
    report.ignored_files = sorted(present - known)
    encoding_changes = _check_encoding(src, fix)

    with tempfile.TemporaryDirectory(prefix="import_data_dir.") as tmp:
        if fix:
            tables, report.changes = fix_tables(src, require_text=require_text)
            report.changes = encoding_changes + report.changes
            staged = Path(tmp)
            for name, table in tables.items():
                write_table(staged / name, table)
        else:
            if not (src / "spk2utt").is_file():
                raise DataDirError(f"{src / 'spk2utt'}: file not found (create it with "
                                   "utt2spk_to_spk2utt.pl, or import with --fix)")
            staged = src
        try:
            data = load_data_dir(staged, require_text=require_text, extra_files=PER_UTT_EXTRA)
        except DataDirError as e:
            if fix:  # name the user's folder, not the scratch copy
                raise DataDirError(str(e).replace(str(staged), str(src))) from None
            if any(k in str(e) for k in FIXABLE):  # point at --fix only where it helps
                raise DataDirError(f"{e}\n(import with --fix to sort tables, drop utterances "
                                   "missing from a file and regenerate spk2utt)") from None
            raise
        if (staged / "spk2gender").is_file():
            spk2gender = read_table(staged / "spk2gender")
            missing = sorted(set(data.spk2utt) - set(spk2gender))
            if missing:
                raise DataDirError(f"{src / 'spk2gender'}: {len(missing)} speaker(s) missing "
                                   f"(e.g. '{missing[0]}')")
        report.n_utts, report.n_spk = len(data.utt2spk), len(data.spk2utt)
        report.n_recordings = len(data.wav_scp)

        if audio_check:
            problems, report.audio_seconds = check_audio(data, nj=nj, sample_rate=sample_rate)
            report.audio_checked = report.n_utts
            if problems:
                raise AudioCheckError(format_problems(f"{src}: audio check", problems))

        with atomic_dir(dst) as out:
            for name in CORE_FILES + PER_UTT_EXTRA + PER_SPK_EXTRA:
                if (staged / name).is_file():
                    shutil.copyfile(staged / name, out / name)
    return report


# ----------------------------------------------------------------------------- recipe sets

def recipe_test_set_names(test_dirs: str, *, train_set: str, valid_set: str,
                          snrs: list[str]) -> list[str]:
    """The recipe's names for ``--test_dirs`` (their basenames), refusing every collision.

    ``test_dirs`` is the option's text, space-separated as ESPnet's ``--test_sets``. A name
    that equals another set's, or one the recipe derives (``<train>_aug``, ``<train>_robust``,
    ``<test>_snr<N>``), would make one set silently replace another under data/.
    """
    dirs = test_dirs.split()
    if not dirs:
        raise DataDirError("--test_dirs is empty")
    for i, d in enumerate(dirs):
        if Path(d).is_dir():
            continue
        joined = next((" ".join(dirs[i:j]) for j in range(i + 2, len(dirs) + 1)
                       if Path(" ".join(dirs[i:j])).is_dir()), None)
        hint = (f"; '{joined}' exists, but --test_dirs is split at spaces: link it to a path "
                "without spaces" if joined else "")
        raise DataDirError(f"--test_dirs: '{d}': data directory not found{hint}")
    taken = {train_set: "the training set", valid_set: "the validation set",
             f"{train_set}_aug": "the noisy training copy", f"{train_set}_robust":
             "the robust training set"}
    if train_set == valid_set:
        raise DataDirError(f"--train_set and --valid_set are both '{train_set}'")
    names: list[str] = []
    for d in dirs:
        name = Path(d).name if Path(d).name not in ("", ".", "..") else Path(d).resolve().name
        if name in taken:
            raise DataDirError(f"--test_dirs: '{d}' would be data/{name}, the name of "
                               f"{taken[name]}; rename or link the directory")
        taken[name] = f"test dir '{d}'"
        names.append(name)
    for name, d in zip(names, dirs):
        for snr in snrs:
            noisy = f"{name}_snr{snr}"
            if noisy in names:
                raise DataDirError(f"--test_dirs: data/{noisy} would be both the {snr} dB copy of "
                                   f"'{d}' and {taken[noisy]}; rename one of them")
    return names


def import_recipe_sets(data_root: str | Path, *, train_dir: str, valid_dir: str, test_dirs: str,
                       train_set: str, valid_set: str, snrs: list[str], fix: bool = False,
                       nj: int = 1) -> dict[str, ImportReport]:
    """Import the training, validation and test dirs under ``data_root`` by their recipe names."""
    tests = recipe_test_set_names(test_dirs, train_set=train_set, valid_set=valid_set, snrs=snrs)
    sources = {train_set: train_dir, valid_set: valid_dir, **dict(zip(tests, test_dirs.split()))}
    return {name: import_data_dir(src, Path(data_root) / name, fix=fix, nj=nj)
            for name, src in sources.items()}
