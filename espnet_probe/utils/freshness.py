"""What an output depends on, as one digest: the single freshness rule of every stage.

A stage stores the digest of its inputs with its output and redoes the work when the digest
differs. Inputs are fingerprinted by kind:
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
import os
import re
import shlex
from pathlib import Path
from typing import Iterable

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
