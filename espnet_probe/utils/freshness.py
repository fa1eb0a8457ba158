"""What an output depends on, and whether it is still made from it: the one freshness rule.

An output (a dir, or a named part of one) keeps a ``Stamp``: the settings it is made with (the
fingerprints of its inputs and the options) in ``.started`` while it is being made and in
``.done`` once it is complete. ``Stamp.begin`` decides, the same way for every stage and tool:
- ``done``: complete with these settings, nothing to do (the caller skips);
- ``resume``: started with these settings and not finished: what it made is kept and the work
  continues (ESPnet's --resume, finished feature jobs, synthesized voices);
- ``changed`` / ``new``: made (or begun) with other settings, or never: what the output owns is
  removed (every file but the experiment records, or the files the caller names) and it is
  made from scratch.
``Stamp.finish`` writes ``.done`` last, atomically, so a killed job never leaves a stamp that
claims more than is there; ``Stamp.is_done`` asks only that (a reader of a finished input).
Shell scripts use it through ``python -m espnet_probe.bin.stamp`` (local/train.sh,
local/augment.sh).

Inputs are fingerprinted by kind:
- a Kaldi data dir or feature dir (``wav.scp`` / ``feats.scp``): its tables, its statistics
  (``*.npz``) and the size and modification time of every file the scp files name (audio
  paths, ``archive.ark:offset`` entries, files named in ``cmd |`` pipes, feature arks), so an
  audio file replaced in place changes the digest although wav.scp's text does not;
- any other directory: every file below it (relative path, size, time);
- a file: its content.
Outputs made one item at a time (a wav per utterance) use the per-item form of the rule: an
item is stale when it is missing or older than a file it was made from (``is_stale``).
Size + time, not content, for audio and arks: hashing hours of audio on every run would cost
more than the stages it guards; tools that rewrite a file update its time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any, Iterable, Optional

from espnet_probe.utils.fileio import atomic_open

# Records of what an experiment is (espnet_probe/experiments.py): kept when its dir is redone.
RECORDS = ("experiment.yaml",)

TABLES = ("wav.scp", "segments", "utt2spk", "text", "utt2clean", "feats.scp", "feats_shape",
          "target.scp")
_ARK_OFFSET = re.compile(r"^(.+):\d+$")


def _stat(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} missing"
    return f"{path} {st.st_size} {st.st_mtime_ns}"


def ark_archive(entry: str) -> Path | None:
    """The archive of a Kaldi ``archive.ark:byte_offset`` entry, None for anything else."""
    ark = _ARK_OFFSET.match(entry)
    if ark is None or Path(entry).exists():
        return None
    return Path(ark.group(1))


def audio_files(entry: str) -> list[Path]:
    """The files a wav.scp or feats.scp entry reads: a path, an ark, or a pipe's operands."""
    entry = entry.strip()
    if entry.endswith("|"):
        try:
            words = shlex.split(entry[:-1])
        except ValueError:  # unbalanced quotes: the command text alone identifies it
            return []
        return [Path(w) for w in words if "/" in w and Path(w).is_file()]
    return [ark_archive(entry) or Path(entry)]


def is_stale(output: Path, inputs: Iterable[Path]) -> bool:
    """True if ``output`` is missing or older than any of ``inputs`` (make's rule)."""
    try:
        made = output.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    return any(f.stat().st_mtime_ns > made for f in inputs if f.exists())


def entry_fingerprint(entry: str) -> str:
    """One wav.scp entry plus the size and time of each file it reads (``path:size:mtime`` for
    a path): cached per-utterance scores and embeddings go stale when the audio is rewritten."""
    entry = entry.strip()
    stats = []
    for f in audio_files(entry):
        try:
            st = f.stat()
        except OSError:
            continue
        stats.append(f":{st.st_size}:{st.st_mtime_ns}")
    return entry + "".join(stats)


def _table_values(path: Path) -> Iterable[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                yield parts[1]


def fingerprint(*paths: str | os.PathLike) -> str:
    """Hex digest of everything under ``paths`` that an output made from them depends on."""
    h = hashlib.sha1()
    for path in map(Path, paths):
        h.update(f"\0{path}\0".encode())
        scps = [path / n for n in ("wav.scp", "feats.scp") if (path / n).is_file()]
        if scps:
            for name in TABLES:
                if (path / name).is_file():
                    h.update(name.encode() + (path / name).read_bytes())
            for extra in sorted(path.glob("*.npz")):
                h.update(hashlib.sha1(extra.read_bytes()).digest())
            # relative entries (our ark paths) are relative to the working directory
            files = sorted({f for scp in scps for v in _table_values(scp) for f in audio_files(v)})
            for f in files:
                h.update(_stat(f).encode())
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(_stat(f).replace(str(path), "", 1).encode())
        elif path.is_file():
            h.update(hashlib.sha1(path.read_bytes()).digest())
        else:
            h.update(b"missing")
    return h.hexdigest()


class Stamp:
    """The settings an output is made with, beside it (module doc). ``name`` tells apart several
    outputs in one dir: ``Stamp(d, "wave")`` keeps ``d/.wave.started`` and ``d/.wave.done``."""

    def __init__(self, directory: str | os.PathLike, name: str = ""):
        self.dir = Path(directory)
        prefix = f".{name}." if name else "."
        self.started = self.dir / f"{prefix}started"
        self.finished = self.dir / f"{prefix}done"

    @staticmethod
    def _settings_of(path: Path) -> Any:
        """The settings a stamp file holds; None if it is missing or of an older format."""
        try:
            return json.loads(path.read_text(encoding="utf-8"))["settings"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def _settings_in(cls, path: Path) -> Optional[str]:
        settings = cls._settings_of(path)
        return None if settings is None else json.dumps(settings, sort_keys=True)

    def state(self, settings: Any) -> str:
        """done | resume | changed | new (module doc), without touching anything."""
        want = json.dumps(settings, sort_keys=True)
        if self._settings_in(self.finished) == want:
            return "done"
        started = self._settings_in(self.started)
        if started == want:
            return "resume"
        if started is not None or self.finished.exists() or self.started.exists():
            return "changed"
        return "new"

    def begin(self, settings: Any, owned: Optional[Iterable[str | os.PathLike]] = None,
              resumable: bool = True) -> str:
        """Decide (``state``) and prepare: unless done or resumable, remove what the output owns
        (``owned`` paths, default every file in the dir but the experiment records) and mark it
        started with ``settings``. ``resumable=False``: an unfinished output is made again
        (reported as ``changed``), for work that cannot continue half-way."""
        state = self.state(settings)
        if state == "done":
            return state
        if state == "resume" and not resumable:
            state = "changed"
        if state in ("changed", "new"):
            for path in (self._everything() if owned is None else map(Path, owned)):
                _remove(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.finished.unlink(missing_ok=True)
        with atomic_open(self.started) as f:
            json.dump({"settings": settings}, f)
        return state

    def finish(self, settings: Any, **summary: Any) -> None:
        """Mark the output complete (``summary`` kept beside the settings, see ``summary()``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.finished) as f:
            json.dump({"settings": settings, **summary}, f, indent=1)
        self.started.unlink(missing_ok=True)

    def is_done(self) -> bool:
        """Finished, with whatever settings (an input another output reads must be complete)."""
        return self.finished.is_file()

    def begun_with(self) -> Any:
        """The settings it was begun with (None: not begun, or already finished)."""
        return self._settings_of(self.started)

    def summary(self) -> dict:
        record = json.loads(self.finished.read_text(encoding="utf-8"))
        record.pop("settings", None)
        return record

    def _everything(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return [p for p in self.dir.iterdir() if p.name not in RECORDS or p.is_dir()]


def _remove(path: Path) -> None:
    """A file, or a dir with everything in it but experiment records (nested experiments)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        for child in path.iterdir():
            if child.name not in RECORDS or child.is_dir():
                _remove(child)
        if not any(path.iterdir()):
            path.rmdir()
