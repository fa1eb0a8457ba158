"""Kaldi data directories: read, validate with errors that name file and line, write atomically.

A data dir holds ``wav.scp`` (utt or recording id -> path or ``cmd |`` pipe), ``text``,
``utt2spk``, ``spk2utt`` and optionally ``segments`` (utt -> recording, start, end in seconds).
Kaldi tools expect every file sorted by key in C (byte) order; for UTF-8 ids that is the same
order as Python's ``sorted`` on ``str``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from espnet_probe.utils.fileio import atomic_dir, atomic_open


class DataDirError(ValueError):
    """A data directory is missing a file, is malformed or is inconsistent."""


# Kaldi splits fields on ASCII space and tab only; Python's str.split() would also split on
# NBSP, vertical tab and other Unicode spaces, giving ids that differ from what Kaldi sees.
_FIELD_SEPARATORS = " \t"
BOM = "\ufeff"
_KEY_VALUE = re.compile(r"[ \t]*([^ \t]+)(?:[ \t]+(.*))?$")


def invisible_characters(text: str) -> list[str]:
    """Names of the characters in an id that a reader cannot see or tell from a space."""
    found = []
    for ch in text:
        if ch in _FIELD_SEPARATORS:
            continue
        if ch.isspace() or not ch.isprintable() or unicodedata.category(ch) == "Cf":
            name = unicodedata.name(ch, "control character")
            found.append(f"U+{ord(ch):04X} {name}")
    return sorted(set(found))


def read_table(path: str | Path, *, allow_empty_value: bool = False,
               strip_bom: bool = False) -> dict[str, str]:
    """Read a ``key value...`` file in order; reject duplicate keys and missing values.

    Ids with invisible characters (a byte-order mark, a no-break space, a vertical tab, ...)
    are refused naming the line and the character: they make ids that look equal differ.
    A byte-order mark at the start of the file is removed only with ``strip_bom`` (--fix).
    """
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: file not found")
    table: dict[str, str] = {}
    # newline="\n": a lone CR or other Unicode line break is data, never a new line here
    with open(path, encoding="utf-8", newline="\n") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if lineno == 1 and line.startswith(BOM):
                if not strip_bom:
                    raise DataDirError(f"{path}:1: starts with a byte-order mark (U+FEFF), which "
                                       "would become part of the first id (import with --fix "
                                       "to remove it)")
                line = line[1:]
            fields = _KEY_VALUE.match(line)
            if fields is None:  # blank line
                continue
            key, value = fields.group(1), (fields.group(2) or "").rstrip(_FIELD_SEPARATORS)
            hidden = invisible_characters(key)
            if hidden:
                raise DataDirError(f"{path}:{lineno}: id {key!r} contains {', '.join(hidden)}; "
                                   "ids must be printable text separated by spaces or tabs")
            if not value and not allow_empty_value:
                raise DataDirError(f"{path}:{lineno}: '{key}' has no value")
            if key in table:
                raise DataDirError(f"{path}:{lineno}: duplicate id '{key}'")
            table[key] = value
    return table


def id_list(ids: list[str], limit: int = 10) -> str:
    """'a', 'b', ... and N more: every dropped or faulty id is countable from one line."""
    shown = ", ".join(f"'{i}'" for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def write_table(path: str | Path, table: dict[str, str]) -> None:
    with atomic_open(path) as f:
        for key in sorted(table):
            f.write(f"{key} {table[key]}\n")


def _check_sorted(path: Path, keys: list[str]) -> None:
    for prev, cur in zip(keys, keys[1:]):
        if cur < prev:
            raise DataDirError(
                f"{path}: not sorted: '{cur}' comes after '{prev}' "
                "(sort it with LC_ALL=C sort, or let fix_data_dir do it)"
            )


@dataclass
class Segment:
    recording: str
    start: float
    end: float


@dataclass
class KaldiDataDir:
    """An in-memory data dir. ``wav_scp`` is keyed by recording id when ``segments`` exist."""

    wav_scp: dict[str, str]
    utt2spk: dict[str, str]
    text: dict[str, str] = field(default_factory=dict)
    segments: dict[str, Segment] | None = None
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # e.g. noise_info, utt2clean

    @property
    def utt_ids(self) -> list[str]:
        return sorted(self.utt2spk)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for utt in self.utt_ids:
            out.setdefault(self.utt2spk[utt], []).append(utt)
        return dict(sorted(out.items()))

    def audio_entry(self, utt: str) -> tuple[str, Segment | None]:
        """The wav.scp entry and optional segment that give this utterance's audio."""
        if self.segments is not None:
            seg = self.segments[utt]
            return self.wav_scp[seg.recording], seg
        return self.wav_scp[utt], None

    def subset(self, utts: list[str]) -> "KaldiDataDir":
        utts = sorted(utts)
        unknown = [u for u in utts if u not in self.utt2spk]
        if unknown:
            raise DataDirError(f"unknown utterance ids: {', '.join(unknown[:5])}")
        keep = set(utts)
        if self.segments is not None:
            segments = {u: self.segments[u] for u in utts}
            recs = {s.recording for s in segments.values()}
            wav_scp = {r: v for r, v in self.wav_scp.items() if r in recs}
        else:
            segments = None
            wav_scp = {u: self.wav_scp[u] for u in utts}
        return KaldiDataDir(
            wav_scp=wav_scp,
            utt2spk={u: self.utt2spk[u] for u in utts},
            text={u: t for u, t in self.text.items() if u in keep},
            segments=segments,
            extra={n: {u: v for u, v in t.items() if u in keep} for n, t in self.extra.items()},
        )


def load_data_dir(path: str | Path, *, require_text: bool = True,
                  extra_files: tuple[str, ...] = ()) -> KaldiDataDir:
    """Load and validate a data dir; any inconsistency raises DataDirError naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(f"{path}: data directory not found")
    files = {}
    for name in ("wav.scp", "utt2spk"):
        files[name] = read_table(path / name)
        _check_sorted(path / name, list(files[name]))
    wav_scp, utt2spk = files["wav.scp"], files["utt2spk"]
    if not utt2spk:
        raise DataDirError(f"{path / 'utt2spk'}: empty data directory")

    segments = None
    if (path / "segments").is_file():
        raw = read_table(path / "segments")
        _check_sorted(path / "segments", list(raw))
        segments = {}
        for utt, value in raw.items():
            fields = value.split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                raise DataDirError(
                    f"{path / 'segments'}: '{utt}' must be 'utt recording start end', got '{value}'"
                ) from None
            if rec not in wav_scp:
                raise DataDirError(f"{path / 'segments'}: '{utt}' names recording '{rec}' "
                                   f"that is not in {path / 'wav.scp'}")
            if not 0 <= start < end:
                raise DataDirError(f"{path / 'segments'}: '{utt}' has start {start} >= end {end}")
            segments[utt] = Segment(rec, start, end)
        audio_ids, audio_file = set(segments), path / "segments"
    else:
        audio_ids, audio_file = set(wav_scp), path / "wav.scp"

    _check_same_ids(path / "utt2spk", set(utt2spk), audio_file, audio_ids)

    text: dict[str, str] = {}
    if (path / "text").is_file():
        text = read_table(path / "text", allow_empty_value=True)
        _check_sorted(path / "text", list(text))
        empty = [utt for utt, words in text.items() if not words]
        if empty:
            raise DataDirError(f"{path / 'text'}: {len(empty)} empty transcript(s): "
                               f"{id_list(empty)} (give them text, or import with --fix to "
                               "drop them)")
        _check_same_ids(path / "utt2spk", set(utt2spk), path / "text", set(text))
    elif require_text:
        raise DataDirError(f"{path / 'text'}: file not found (transcripts are required here)")

    if (path / "spk2utt").is_file():
        spk2utt = read_table(path / "spk2utt")
        _check_sorted(path / "spk2utt", list(spk2utt))
        expected: dict[str, list[str]] = {}
        for utt in sorted(utt2spk):
            expected.setdefault(utt2spk[utt], []).append(utt)
        for spk, utts in spk2utt.items():
            if sorted(utts.split()) != expected.get(spk):
                raise DataDirError(f"{path / 'spk2utt'}: speaker '{spk}' does not match "
                                   f"{path / 'utt2spk'} (regenerate spk2utt from utt2spk)")
        missing = sorted(set(expected) - set(spk2utt))
        if missing:
            raise DataDirError(f"{path / 'spk2utt'}: speakers missing: {', '.join(missing[:5])}")

    extra = {}
    for name in extra_files:
        if (path / name).is_file():
            extra[name] = read_table(path / name)
            _check_same_ids(path / "utt2spk", set(utt2spk), path / name, set(extra[name]))
    return KaldiDataDir(wav_scp=wav_scp, utt2spk=utt2spk, text=text, segments=segments,
                        extra=extra)


def _check_same_ids(ref_file: Path, ref: set[str], other_file: Path, other: set[str]) -> None:
    only_ref = sorted(ref - other)
    only_other = sorted(other - ref)
    if only_ref or only_other:
        parts = []
        if only_ref:
            parts.append(f"{len(only_ref)} ids in {ref_file.name} but not in {other_file.name} "
                         f"(e.g. '{only_ref[0]}')")
        if only_other:
            parts.append(f"{len(only_other)} ids in {other_file.name} but not in "
                         f"{ref_file.name} (e.g. '{only_other[0]}')")
        raise DataDirError(f"{other_file.parent}: mismatched ids: " + "; ".join(parts))


def write_data_dir(path: str | Path, data: KaldiDataDir) -> None:
    """Write every file of ``data`` sorted; the directory appears complete or not at all."""
    with atomic_dir(path) as tmp:
        write_table(tmp / "wav.scp", data.wav_scp)
        write_table(tmp / "utt2spk", data.utt2spk)
        write_table(tmp / "spk2utt", {s: " ".join(u) for s, u in data.spk2utt.items()})
        if data.text:
            write_table(tmp / "text", data.text)
        if data.segments is not None:
            write_table(tmp / "segments", {
                u: f"{s.recording} {s.start:.3f} {s.end:.3f}" for u, s in data.segments.items()})
        for name, table in data.extra.items():
            write_table(tmp / name, table)


def check_speaker_split(train: KaldiDataDir, others: dict[str, KaldiDataDir]) -> None:
    """Held-out sets must not share speakers with training (the probes are scored on unseen voices)."""
    train_spk = set(train.utt2spk.values())
    for name, data in others.items():
        shared = sorted(train_spk & set(data.utt2spk.values()))
        if shared:
            raise DataDirError(f"{name}: {len(shared)} speakers also occur in the training set "
                               f"(e.g. '{shared[0]}'); split the corpus by speaker")
