"""LibriSpeech: download a subset, check the tree, turn it into Kaldi data dirs, split by speaker.

Tree layout (as distributed): ``<root>/<subset>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac`` with
one ``<spk>-<chapter>.trans.txt`` per chapter and ``<root>/SPEAKERS.TXT`` (id | sex | subset |
minutes | name). Utterance ids are already speaker-prefixed, so Kaldi's sort order holds.

Speaker split (``split_speakers``): the paper needs test speakers never seen in training. Counts
per part are first shared out between the genders in proportion (largest remainder, exact
fractions, ties to the part listed first), so every part mirrors the corpus' gender mix; then
each gender's speakers, shuffled with the seed, are dealt to parts in the order given.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from espnet_probe.utils.freshness import Stamp
from espnet_probe.utils.kaldi_dir import DataDirError, KaldiDataDir

URL_BASE = "https://www.openslr.org/resources/12"
SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100",
           "train-clean-360", "train-other-500")
MAX_REPORTED = 10
_UTT_RE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class LibriSpeechError(DataDirError):
    """The LibriSpeech tree is incomplete or inconsistent."""


def _raise_problems(what: str, problems: list[str]) -> None:
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        extra = len(problems) - MAX_REPORTED
        more = f"\n  ... and {extra} more" if extra > 0 else ""
        raise LibriSpeechError(f"{what}: {len(problems)} problem(s):\n  {shown}{more}")


# ----------------------------------------------------------------------------- reading the tree

def find_root(path: str | Path, subsets: list[str]) -> Path:
    """The folder that holds the subset folders; also accepts its parent (``.../LibriSpeech``)."""
    path = Path(path)
    if not path.is_dir():
        raise LibriSpeechError(f"{path}: LibriSpeech directory not found")
    for cand in (path, path / "LibriSpeech"):
        if all((cand / s).is_dir() for s in subsets):
            return cand
    missing = [s for s in subsets if not (path / s).is_dir()]
    have = sorted(p.name for p in path.iterdir() if p.is_dir())
    raise LibriSpeechError(f"{path}: subset folder(s) not found: {', '.join(missing)} "
                           f"(found: {', '.join(have) or 'nothing'})")


def read_speakers(path: str | Path) -> dict[str, str]:
    """Speaker id -> 'f' / 'm' from SPEAKERS.TXT (names may themselves contain '|')."""
    path = Path(path)
    genders: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            fields = [x.strip() for x in line.split("|", 4)]
            if len(fields) < 2 or not fields[0].isdigit() or fields[1].upper() not in ("F", "M"):
                raise LibriSpeechError(f"{path}:{lineno}: expected 'id | F/M | ...', got "
                                       f"'{line.strip()}'")
            genders[fields[0]] = fields[1].lower()
    return genders


def _check_header(flac: Path) -> str | None:
    """Cheap per-file check (header only): empty, unreadable, wrong rate, not mono."""
    if flac.stat().st_size == 0:
        return f"{flac}: file is empty (0 bytes)"
    try:
        info = sf.info(str(flac))
    except (sf.LibsndfileError, RuntimeError) as e:
        return f"{flac}: corrupt or unsupported audio ({e})"
    if info.samplerate != 16000:
        return f"{flac}: sample rate is {info.samplerate} Hz, expected 16000 Hz"
    if info.channels != 1:
        return f"{flac}: {info.channels} channels, expected mono"
    if info.frames == 0:
        return f"{flac}: no samples"
    return None


def read_subset(subset_dir: str | Path, *, check_audio: bool = True,
                genders: dict[str, str] | None = None) -> KaldiDataDir:
    """Read one subset folder into a data dir; every problem found is reported together.

    ``genders`` (speaker -> f/m) adds ``utt2gender`` when it covers every speaker.
    """
    subset_dir = Path(subset_dir)
    if not subset_dir.is_dir():
        raise LibriSpeechError(f"{subset_dir}: subset folder not found")
    problems: list[str] = []
    wav_scp: dict[str, str] = {}
    text: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    flacs = sorted(subset_dir.glob("*/*/*.flac"))
    trans_files = sorted(subset_dir.glob("*/*/*.trans.txt"))
    if not flacs and not trans_files:
        raise LibriSpeechError(f"{subset_dir}: no <spk>/<chapter>/*.flac or *.trans.txt found")
    mentioned: set[Path] = set()  # audio paths named by any transcript line, even a faulty one

    for trans in tqdm(trans_files, desc=f"read {subset_dir.name}", unit="chapter",
                      file=sys.stderr, leave=False):
        spk, chapter = trans.parent.parent.name, trans.parent.name
        if trans.name != f"{spk}-{chapter}.trans.txt":
            problems.append(f"{trans}: expected the name {spk}-{chapter}.trans.txt in this folder")
        try:
            lines = trans.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            problems.append(f"{trans}: not UTF-8 text ({e.reason})")
            continue
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split(maxsplit=1)
            utt = parts[0]
            mentioned.add(trans.parent / f"{utt}.flac")
            m = _UTT_RE.match(utt)
            where = f"{trans}:{lineno}"
            if not m or (m.group(1), m.group(2)) != (spk, chapter):
                problems.append(f"{where}: utterance id '{utt}' does not match "
                                f"'{spk}-{chapter}-NNNN'")
                continue
            if len(parts) < 2 or not parts[1].strip():
                problems.append(f"{where}: '{utt}' has an empty transcript")
                continue
            if utt in text:
                problems.append(f"{where}: duplicate utterance id '{utt}'")
                continue
            flac = trans.parent / f"{utt}.flac"
            if not flac.is_file():
                problems.append(f"{where}: '{utt}' has no audio file {flac}")
                continue
            text[utt] = parts[1].strip()
            utt2spk[utt] = spk
            wav_scp[utt] = str(flac.resolve())

    for flac in flacs:
        if flac not in mentioned:
            spk, chapter = flac.parent.parent.name, flac.parent.name
            problems.append(f"{flac}: no transcript line for '{flac.stem}' in "
                            f"{flac.parent / f'{spk}-{chapter}.trans.txt'}")

    if check_audio:
        for utt in tqdm(sorted(wav_scp), desc=f"check {subset_dir.name}", unit="utt",
                        file=sys.stderr, leave=False):
            err = _check_header(Path(wav_scp[utt]))
            if err:
                problems.append(err)
    _raise_problems(str(subset_dir), problems)

    data = KaldiDataDir(wav_scp=dict(sorted(wav_scp.items())),
                        utt2spk=dict(sorted(utt2spk.items())), text=dict(sorted(text.items())))
    if genders is not None:
        unknown = sorted({s for s in utt2spk.values() if s not in genders})
        if unknown:
            print(f"warning: {len(unknown)} speaker(s) of {subset_dir} not in SPEAKERS.TXT "
                  f"(e.g. {unknown[0]}); utt2gender not written", file=sys.stderr)
        else:
            data.extra["utt2gender"] = {u: genders[s] for u, s in data.utt2spk.items()}
    return data


UTT_CHOICES = ("random", "shortest")


def limit_utts_per_speaker(data: KaldiDataDir, max_utts: int, seed: int = 0,
                           choice: str = "random") -> KaldiDataDir:
    """Keep at most ``max_utts`` per speaker: a seeded random choice (spans their chapters), or
    the shortest (quick runs: every stage's cost grows with the audio's length; on
    train-clean-5, 3 a speaker average 5.0 s against 12.3 s at random)."""
    if max_utts <= 0:
        raise ValueError(f"max_utts_per_spk must be positive, got {max_utts}")
    if choice not in UTT_CHOICES:
        raise ValueError(f"utt_choice must be one of {UTT_CHOICES}, got {choice!r}")
    rng = random.Random(seed)
    keep: list[str] = []
    for spk, utts in data.spk2utt.items():
        if len(utts) <= max_utts:
            keep += utts
        elif choice == "shortest":  # by samples in the FLAC header, ties by id
            keep += sorted(utts, key=lambda u: (sf.info(data.wav_scp[u]).frames, u))[:max_utts]
        else:
            keep += rng.sample(utts, max_utts)
    return data.subset(keep)


# ----------------------------------------------------------------------------- speaker split

def parse_split_spec(spec: str, names: list[str] | None = None) -> list[tuple[str, str]]:
    """``train=14,dev=2,test=4`` or ``0.7,0.1,0.2`` (names from ``names``) -> [(name, value)].

    Values are all counts or all fractions; one count may be ``rest``.
    """
    items = [x.strip() for x in spec.split(",") if x.strip()]
    if not items:
        raise ValueError("empty --split_by_speaker spec")
    keyed = ["=" in x for x in items]
    if all(keyed):
        pairs = [tuple(x.split("=", 1)) for x in items]
        pairs = [(k.strip(), v.strip()) for k, v in pairs]
    elif not any(keyed):
        if not names or len(names) != len(items):
            raise ValueError(f"split spec '{spec}' has no names: write name=value pairs or give "
                             f"{len(items)} names")
        pairs = list(zip(names, items))
    else:
        raise ValueError(f"split spec '{spec}': either every part or none has name=")
    seen = set()
    for name, value in pairs:
        if not name or "/" in name or name in seen:
            raise ValueError(f"split spec '{spec}': bad or repeated part name '{name}'")
        seen.add(name)
        if not value:
            raise ValueError(f"split spec '{spec}': part '{name}' has no value")
    return pairs


def _part_sizes(pairs: list[tuple[str, str]], n_spk: int) -> dict[str, int]:
    values = [v for _, v in pairs]
    if any("." in v for v in values):
        try:
            fracs = [Fraction(v) for v in values]
        except ValueError:
            raise ValueError(f"split values {values}: not all numbers") from None
        if any(f <= 0 for f in fracs) or abs(sum(fracs) - 1) > Fraction(1, 1000):
            raise ValueError(f"split fractions {values} must be positive and sum to 1")
        sizes = _largest_remainder([f * n_spk / sum(fracs) for f in fracs])
    else:
        rest = [i for i, v in enumerate(values) if v == "rest"]
        if len(rest) > 1:
            raise ValueError("only one split part may be 'rest'")
        try:
            sizes = [0 if v == "rest" else int(v) for v in values]
        except ValueError:
            raise ValueError(f"split values {values}: use integers, fractions or 'rest'") from None
        if rest:
            sizes[rest[0]] = n_spk - sum(sizes)
        if sum(sizes) != n_spk:
            raise ValueError(f"split counts {values} sum to {sum(sizes)} but the data has "
                             f"{n_spk} speakers (use 'rest' for one part, or fractions)")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"split {dict(pairs)} leaves a part without speakers "
                         f"({n_spk} speakers in all)")
    return {name: s for (name, _), s in zip(pairs, sizes)}


def _largest_remainder(quotas: list[Fraction]) -> list[int]:
    """Round quotas that sum to an integer, keeping the sum; ties go to the earlier entry."""
    floors = [int(q) for q in quotas]
    left = int(round(sum(quotas))) - sum(floors)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def split_speakers(spk2gender: dict[str, str], sizes: dict[str, int],
                   seed: int = 0) -> dict[str, list[str]]:
    """Disjoint speaker lists per part, gender mix of each part proportional to the whole."""
    if sum(sizes.values()) != len(spk2gender):
        raise ValueError("part sizes do not add up to the number of speakers")
    rng = random.Random(seed)
    by_gender: dict[str, list[str]] = {}
    for spk in sorted(spk2gender):
        by_gender.setdefault(spk2gender[spk], []).append(spk)
    capacity = {p: Fraction(s) for p, s in sizes.items()}
    remaining = len(spk2gender)
    parts: dict[str, list[str]] = {p: [] for p in sizes}
    for gender in sorted(by_gender):
        spks = by_gender[gender]
        rng.shuffle(spks)
        # share of each part proportional to its remaining room: never exceeds it (see module doc)
        quota = _largest_remainder([len(spks) * capacity[p] / remaining for p in sizes])
        start = 0
        for p, q in zip(sizes, quota):
            parts[p] += spks[start:start + q]
            capacity[p] -= q
            start += q
        remaining -= len(spks)
    return {p: sorted(s) for p, s in parts.items()}


# ----------------------------------------------------------------------------- download

def _remote_size(resp) -> int | None:
    cr = resp.headers.get("Content-Range")  # "bytes a-b/total"
    if cr and "/" in cr and not cr.endswith("/*"):
        return int(cr.rsplit("/", 1)[1])
    cl = resp.headers.get("Content-Length")
    return int(cl) if cl is not None and resp.status == 200 else None


def download(url: str, dest: str | Path, *, retries: int = 5, timeout: float = 60.0,
             chunk: int = 1 << 20, retry_wait: float = 2.0) -> Path:
    """Fetch ``url`` to ``dest`` via ``dest.part``, resuming with an HTTP Range after a drop."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_err: Exception | None = None
    for attempt in range(1, retries + 1):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                cr = resp.headers.get("Content-Range", "")
                if have and (resp.status != 206 or not cr.startswith(f"bytes {have}-")):
                    have = 0  # server ignored the range (or sent another one): start over
                total = _remote_size(resp)
                mode = "ab" if have else "wb"
                with open(part, mode) as f, tqdm(total=total, initial=have, unit="B",
                                                 unit_scale=True, desc=dest.name,
                                                 file=sys.stderr, leave=False) as bar:
                    while True:
                        block = resp.read(chunk)
                        if not block:
                            break
                        f.write(block)
                        bar.update(len(block))
            size = part.stat().st_size
            if total is not None and size != total:
                raise OSError(f"got {size} of {total} bytes")
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # range past the end: is the part already whole?
                cr = e.headers.get("Content-Range", "")
                if cr == f"bytes */{have}":
                    os.replace(part, dest)
                    return dest
                part.unlink()  # stale partial file that does not fit the remote one
                last_err = e
                continue
            if 400 <= e.code < 500 and e.code not in (408, 429):  # retrying will not help
                raise OSError(f"{url}: HTTP {e.code} {e.reason}") from None
            last_err = e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            last_err = e
        if attempt < retries:
            print(f"warning: download of {url} interrupted ({last_err}); attempt {attempt}/"
                  f"{retries}, retrying", file=sys.stderr)
            time.sleep(retry_wait * attempt)
    kept = (f"; {part.stat().st_size} bytes kept in {part}, rerun to resume"
            if part.exists() else "")
    raise OSError(f"{url}: download failed after {retries} attempt(s) ({last_err}){kept}")


def _check_member(archive: Path, target: Path, root: Path, m: tarfile.TarInfo) -> None:
    dest = (root / m.name).resolve()
    if Path(m.name).is_absolute() or ".." in Path(m.name).parts or not dest.is_relative_to(root):
        raise LibriSpeechError(f"{archive}: member '{m.name}' would be written outside "
                               f"{target}; refusing to extract")
    if m.issym() or m.islnk():
        base = dest.parent if m.issym() else root  # hard link names are archive paths
        link = (base / m.linkname).resolve()
        if Path(m.linkname).is_absolute() or not link.is_relative_to(root):
            raise LibriSpeechError(f"{archive}: link '{m.name}' -> '{m.linkname}' points "
                                   f"outside {target}; refusing to extract")
    elif not (m.isfile() or m.isdir()):
        raise LibriSpeechError(f"{archive}: member '{m.name}' is a device or fifo; "
                               "refusing to extract")


def safe_extract(archive: str | Path, target: str | Path) -> int:
    """Extract a tar(.gz) member by member, refusing any that would land outside ``target``.

    One streaming pass (a 6 GB archive is not decompressed twice); the caller extracts into a
    scratch folder, so a refusal half-way leaves nothing that looks usable. Returns the count.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    n = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar:
                _check_member(archive, target, root, m)
                # directory modes stay default: a read-only one would block its own files
                try:
                    tar.extract(m, root, set_attrs=m.isfile(), filter="data")
                except TypeError:  # Python without extraction filters; member checked above
                    tar.extract(m, root, set_attrs=m.isfile())
                n += 1
    except (tarfile.TarError, OSError, EOFError) as e:
        raise LibriSpeechError(f"{archive}: not a readable tar archive or extraction failed "
                               f"({e}); delete it and download again") from None
    if n == 0:
        raise LibriSpeechError(f"{archive}: empty archive")
    return n


def download_subsets(download_dir: str | Path, subsets: list[str], *,
                     url_base: str = URL_BASE, keep_archives: bool = False,
                     retry_wait: float = 2.0) -> Path:
    """Download and extract subsets into ``download_dir/LibriSpeech``; returns that root.

    Each finished subset is stamped (``LibriSpeech/<subset>/.done``, espnet_probe.utils.freshness:
    made from its archive, by name, so a mirror serves the same subset); a stamped subset is
    skipped. Extraction happens in a scratch folder and is moved into place, so an interrupted
    run never leaves a half subset that looks complete.
    """
    download_dir = Path(download_dir)
    root = download_dir / "LibriSpeech"
    for subset in subsets:
        if subset not in SUBSETS:
            print(f"warning: '{subset}' is not a standard LibriSpeech subset name; trying it",
                  file=sys.stderr)
        stamp, settings = Stamp(root / subset), {"archive": f"{subset}.tar.gz"}
        legacy = root / subset / ".complete"
        if legacy.is_file():  # marked by an earlier version: checked once, then stamped or redone
            try:
                read_subset(root / subset, check_audio=False)
                stamp.finish(settings, url=legacy.read_text(encoding="utf-8").strip())
            except LibriSpeechError as e:
                print(f"warning: {e}\n{subset}: downloading it again", file=sys.stderr)
            legacy.unlink()
        if stamp.state(settings) == "done":
            print(f"{subset}: already complete in {root / subset}", file=sys.stderr)
            continue
        t0 = time.time()
        url = f"{url_base.rstrip('/')}/{subset}.tar.gz"
        archive = download(url, download_dir / settings["archive"], retry_wait=retry_wait)
        size = archive.stat().st_size
        scratch = download_dir / f".extract.{subset}.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            members = safe_extract(archive, scratch)
        except LibriSpeechError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        got = scratch / "LibriSpeech" / subset
        if not got.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
            raise LibriSpeechError(f"{archive}: has no LibriSpeech/{subset}/ folder")
        root.mkdir(parents=True, exist_ok=True)
        for meta in (scratch / "LibriSpeech").iterdir():  # SPEAKERS.TXT etc., same in every tar
            if meta.is_file():
                os.replace(meta, root / meta.name)
        shutil.rmtree(root / subset, ignore_errors=True)
        os.replace(got, root / subset)
        shutil.rmtree(scratch, ignore_errors=True)
        stamp.finish(settings, url=url, bytes=size, members=members)
        if not keep_archives:
            archive.unlink()
        print(f"{subset}: downloaded and extracted in {time.time() - t0:.1f} s", file=sys.stderr)
    return root


# ----------------------------------------------------------------------------- whole preparation

@dataclass
class PreparedSet:
    name: str
    data: KaldiDataDir

    def summary(self) -> str:
        n_spk = len(self.data.spk2utt)
        g = self.data.extra.get("utt2gender")
        mix = ""
        if g:
            spk_g = {self.data.utt2spk[u]: v for u, v in g.items()}
            mix = f" ({sum(v == 'f' for v in spk_g.values())} f, " \
                  f"{sum(v == 'm' for v in spk_g.values())} m)"
        return f"{self.name}: {len(self.data.utt2spk)} utterances, {n_spk} speakers{mix}"


def prepare(librispeech_dir: str | Path, subsets: list[str], *, names: list[str] | None = None,
            split_spec: str | None = None, seed: int = 0, max_utts_per_spk: int | None = None,
            check_audio: bool = True, utt_choice: str = "random") -> list[PreparedSet]:
    """Data dirs (in memory) for each subset, or for each speaker-split part of one subset."""
    if not subsets:
        raise ValueError("no subsets given")
    root = find_root(librispeech_dir, subsets)
    genders = read_speakers(root / "SPEAKERS.TXT") if (root / "SPEAKERS.TXT").is_file() else None
    if genders is None:
        print(f"warning: {root / 'SPEAKERS.TXT'} not found; no utt2gender, split ignores gender",
              file=sys.stderr)
    datas = []
    for subset in subsets:
        data = read_subset(root / subset, check_audio=check_audio, genders=genders)
        if max_utts_per_spk is not None:
            data = limit_utts_per_speaker(data, max_utts_per_spk, seed, utt_choice)
        datas.append(data)

    if split_spec:
        if len(subsets) != 1:
            raise ValueError(f"--split_by_speaker splits ONE subset; got {len(subsets)}: "
                             f"{' '.join(subsets)}")
        data = datas[0]
        pairs = parse_split_spec(split_spec, names)
        spks = sorted(data.spk2utt)
        g = data.extra.get("utt2gender")
        spk2gender = {s: "?" for s in spks}
        if g:
            spk2gender.update({data.utt2spk[u]: v for u, v in g.items()})
        parts = split_speakers(spk2gender, _part_sizes(pairs, len(spks)), seed)
        return [PreparedSet(p, data.subset([u for s in spk for u in data.spk2utt[s]]))
                for p, spk in parts.items()]

    if names is None:
        names = [s.replace("-", "_") for s in subsets]
    if len(names) != len(subsets):
        raise ValueError(f"{len(names)} names for {len(subsets)} subsets")
    if len(set(names)) != len(names):
        raise ValueError(f"output names repeat: {' '.join(names)}")
    return [PreparedSet(n, d) for n, d in zip(names, datas)]
