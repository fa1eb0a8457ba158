"""Speaker-verification trial lists: equal numbers of target and non-target pairs, seeded.

File format, one trial per line: ``utt1 utt2 target|nontarget`` (utt1 < utt2, lines sorted).

How pairs are drawn (so that no speaker dominates the EER):
- Targets: the quota is shared out as evenly as possible over speakers (water-filling: a
  speaker with fewer possible pairs than its share gives all it has, the rest is shared by the
  others); each speaker's pairs are drawn without replacement from all its utterance pairs.
- Non-targets: the quota is shared out as evenly as possible over unordered *speaker pairs*,
  then utterance pairs are drawn without replacement within each speaker pair. Over the
  complete set of speaker pairs every speaker takes part in the same number of non-targets.
- Remainders after even division go to randomly chosen (seeded) speakers / speaker pairs.
- Never an utterance with itself; no unordered pair twice (targets and non-targets are disjoint
  by construction: same vs different speakers).

Gender (``nontarget_gender``): ``any`` (default) draws non-targets over all speaker pairs, as
the paper's balanced positive/negative lists do; about half of them are then cross-gender and
easy, which lowers the EER. ``same`` keeps only same-gender speaker pairs (harder, closer to
what the encoder must really separate); each gender's share is weighted so that every speaker
still appears in about the same number of non-targets. Targets are same-gender anyway.
Gender comes from ``utt2gender`` or ``spk2gender`` in the data dir.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.kaldi_dir import DataDirError, read_table

LABELS = ("target", "nontarget")


class TrialsError(ValueError):
    """Trials that cannot be made as asked, or a malformed trials file."""


@dataclass
class Trials:
    pairs: list[tuple[str, str, bool]]  # (utt1, utt2, is_target)
    info: dict = field(default_factory=dict)

    @property
    def n_target(self) -> int:
        return sum(1 for *_, t in self.pairs if t)

    @property
    def n_nontarget(self) -> int:
        return len(self.pairs) - self.n_target

    def utterances(self) -> list[str]:
        return sorted({u for a, b, _ in self.pairs for u in (a, b)})


def allocate(quota: int, caps: np.ndarray, weights: np.ndarray | None,
             rng: np.random.Generator) -> np.ndarray:
    """Integer shares of ``quota`` proportional to ``weights`` but never above ``caps``.

    Weighted water-filling: the level L solves sum(min(cap, L * w)) = quota; each group gets
    floor(min(cap, L*w)), and the few units left go to random groups with room to spare.
    """
    caps = np.asarray(caps, dtype=np.int64)
    w = np.ones(caps.size) if weights is None else np.asarray(weights, dtype=np.float64)
    if quota > caps.sum():
        raise TrialsError(f"cannot draw {quota} pairs from {caps.sum()} available")
    if quota == 0:
        return np.zeros_like(caps)
    active = (caps > 0) & (w > 0)
    share = np.zeros(caps.size)
    left, free = float(quota), active.copy()
    # Saturate groups whose cap is below their fair share, in order of cap / weight.
    while free.any():
        level = left / w[free].sum()
        full = free & (caps < level * w)
        if not full.any():
            share[free] = level * w[free]
            break
        share[full] = caps[full]
        left -= caps[full].sum()
        free &= ~full
    alloc = np.minimum(np.floor(share + 1e-9).astype(np.int64), caps)
    rest = quota - int(alloc.sum())
    while rest > 0:  # hand out the remainder one unit per group, random order, seeded
        room = np.flatnonzero(alloc < caps)
        take = rng.permutation(room)[:rest]
        alloc[take] += 1
        rest -= take.size
    return alloc


def _pair_from_index(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Map k in [0, n(n-1)/2) to (i, j), i < j, numbering the upper triangle row by row."""
    k = np.asarray(k, dtype=np.int64)

    def row_start(i):
        return i * (2 * n - i - 1) // 2

    b = 2 * n - 1  # row_start(i) <= k solved for i, then nudged past float rounding
    i = np.floor((b - np.sqrt(np.maximum(b * b - 8.0 * k, 0.0))) / 2).astype(np.int64)
    i = np.clip(i, 0, n - 2)
    i -= row_start(i) > k
    i += row_start(i + 1) <= k
    return i, k - row_start(i) + i + 1


def read_genders(data_dir: Path, utt2spk: dict[str, str]) -> dict[str, str] | None:
    """speaker -> gender from utt2gender or spk2gender, or None when neither exists."""
    if (data_dir / "utt2gender").is_file():
        table, source = read_table(data_dir / "utt2gender"), data_dir / "utt2gender"
        genders: dict[str, str] = {}
        for utt, spk in utt2spk.items():
            if utt not in table:
                raise DataDirError(f"{source}: no gender for utterance '{utt}'")
            g = table[utt].lower()
            if genders.setdefault(spk, g) != g:
                raise DataDirError(f"{source}: speaker '{spk}' has utterances of two genders")
        return genders
    if (data_dir / "spk2gender").is_file():
        table, source = read_table(data_dir / "spk2gender"), data_dir / "spk2gender"
        missing = sorted(set(utt2spk.values()) - set(table))
        if missing:
            raise DataDirError(f"{source}: no gender for speaker '{missing[0]}'")
        return {s: table[s].lower() for s in set(utt2spk.values())}
    return None


def make_trials(utt2spk: dict[str, str], n_per_class: int, seed: int = 0,
                genders: dict[str, str] | None = None, nontarget_gender: str = "any",
                allow_fewer: bool = False) -> Trials:
    """Draw ``n_per_class`` target and as many non-target trials (see the module docstring)."""
    if n_per_class < 1:
        raise TrialsError(f"n_per_class must be >= 1, got {n_per_class}")
    if nontarget_gender not in ("any", "same"):
        raise TrialsError(f"nontarget_gender must be 'any' or 'same', got {nontarget_gender!r}")
    if nontarget_gender == "same" and genders is None:
        raise TrialsError("nontarget_gender 'same' needs utt2gender or spk2gender in the data dir")
    spk2utts: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utts.setdefault(utt2spk[utt], []).append(utt)
    speakers = sorted(spk2utts)
    sizes = np.array([len(spk2utts[s]) for s in speakers], dtype=np.int64)

    tgt_caps = sizes * (sizes - 1) // 2
    # Speaker pairs allowed for non-targets, with weights that keep per-speaker usage even.
    sp_a, sp_b = np.triu_indices(len(speakers), k=1)
    weights = np.ones(sp_a.size)
    if nontarget_gender == "same":
        g = np.array([genders[s] for s in speakers])
        keep = g[sp_a] == g[sp_b]
        sp_a, sp_b = sp_a[keep], sp_b[keep]
        # A gender with m speakers has m-1 partners per speaker: weight 1/(m-1) evens usage.
        counts = {x: int((g == x).sum()) for x in set(g)}
        weights = np.array([1.0 / (counts[x] - 1) for x in g[sp_a]])
    non_caps = sizes[sp_a] * sizes[sp_b]

    avail_t, avail_n = int(tgt_caps.sum()), int(non_caps.sum())
    n = n_per_class
    if n > min(avail_t, avail_n):
        what = (f"{len(utt2spk)} utterances of {len(speakers)} speakers allow at most "
                f"{avail_t} target and {avail_n} non-target pairs"
                + (" (same-gender)" if nontarget_gender == "same" else ""))
        if not allow_fewer or min(avail_t, avail_n) == 0:
            raise TrialsError(f"cannot make {n_per_class} trials per class: {what}; ask for "
                              "fewer, or allow capping (--allow_fewer)")
        n = min(avail_t, avail_n)
        print(f"make_trials: warning: {what}; making {n} per class instead of {n_per_class}",
              file=sys.stderr)

    rng = np.random.default_rng(seed)
    pairs: list[tuple[str, str, bool]] = []
    tgt_alloc = allocate(n, tgt_caps, None, rng)
    for s, q in zip(speakers, tgt_alloc):
        if q == 0:
            continue
        utts = spk2utts[s]
        ks = rng.choice(len(utts) * (len(utts) - 1) // 2, size=int(q), replace=False)
        i, j = _pair_from_index(ks, len(utts))
        pairs.extend((utts[x], utts[y], True) for x, y in zip(i, j))
    non_alloc = allocate(n, non_caps, weights, rng)
    for a, b, q in zip(sp_a, sp_b, non_alloc):
        if q == 0:
            continue
        ua, ub = spk2utts[speakers[a]], spk2utts[speakers[b]]
        ks = rng.choice(len(ua) * len(ub), size=int(q), replace=False)
        for k in ks:
            x, y = ua[k // len(ub)], ub[k % len(ub)]
            pairs.append((min(x, y), max(x, y), False))
    pairs.sort()

    per_spk_t = {s: int(q) for s, q in zip(speakers, tgt_alloc)}
    per_spk_n = dict.fromkeys(speakers, 0)
    for a, b, q in zip(sp_a, sp_b, non_alloc):
        per_spk_n[speakers[a]] += int(q)
        per_spk_n[speakers[b]] += int(q)
    info = {"n_speakers": len(speakers), "n_utterances": len(utt2spk), "requested": n_per_class,
            "n_per_class": n, "seed": seed, "nontarget_gender": nontarget_gender,
            "targets_per_speaker": [min(per_spk_t.values()), max(per_spk_t.values())],
            "nontargets_per_speaker": [min(per_spk_n.values()), max(per_spk_n.values())]}
    if genders is not None:
        cross = sum(1 for a, b, t in pairs
                    if not t and genders[utt2spk[a]] != genders[utt2spk[b]])
        info["cross_gender_nontargets"] = cross
    return Trials(pairs=pairs, info=info)


def write_trials(path: str | Path, trials: Trials) -> None:
    with atomic_open(path) as f:
        for a, b, t in trials.pairs:
            f.write(f"{a} {b} {LABELS[0] if t else LABELS[1]}\n")


def read_trials(path: str | Path) -> Trials:
    """Parse a trials file; malformed lines, self-pairs and duplicates name file:line."""
    path = Path(path)
    if not path.is_file():
        raise TrialsError(f"{path}: trials file not found")
    pairs: list[tuple[str, str, bool]] = []
    seen: dict[tuple[str, str], int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3 or fields[2] not in LABELS:
                raise TrialsError(f"{path}:{lineno}: expected 'utt1 utt2 target|nontarget', "
                                  f"got {line.strip()!r}")
            a, b, label = fields
            if a == b:
                raise TrialsError(f"{path}:{lineno}: utterance '{a}' paired with itself")
            key = (min(a, b), max(a, b))
            if key in seen:
                raise TrialsError(f"{path}:{lineno}: pair {a} {b} already on line {seen[key]}")
            seen[key] = lineno
            pairs.append((a, b, label == LABELS[0]))
    if not pairs:
        raise TrialsError(f"{path}: no trials")
    return Trials(pairs=pairs)
