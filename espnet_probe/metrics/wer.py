"""Word and character error rates with substitution / deletion / insertion counts (sclite-style)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ErrorCounts:
    ref_len: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    sentences: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        """Errors per reference token, in percent (can exceed 100 with insertions)."""
        return 100.0 * self.errors / max(self.ref_len, 1)

    def add(self, other: "ErrorCounts") -> None:
        for f in ("ref_len", "sub", "dele", "ins", "sentences", "sentence_errors"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


def align_counts(ref: list[str], hyp: list[str]) -> ErrorCounts:
    """Minimum-edit alignment; ties prefer substitutions, as sclite does."""
    n, m = len(ref), len(hyp)
    # cost[j], with per-cell (sub, del, ins) kept so the counts come from one optimal path
    prev = [(j, 0, 0, j) for j in range(m + 1)]  # (cost, sub, del, ins)
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                c, s, d, ins = prev[j - 1]
                best = (c + 1, s + 1, d, ins)
            c, s, d, ins = prev[j]
            if c + 1 < best[0]:
                best = (c + 1, s, d + 1, ins)
            c, s, d, ins = cur[j - 1]
            if c + 1 < best[0]:
                best = (c + 1, s, d, ins + 1)
            cur.append(best)
        prev = cur
    _, s, d, ins = prev[m]
    return ErrorCounts(ref_len=n, sub=s, dele=d, ins=ins, sentences=1,
                       sentence_errors=int(s + d + ins > 0))


def score(refs: dict[str, str], hyps: dict[str, str], unit: str) -> ErrorCounts:
    """Corpus error counts over every reference utterance; a missing hypothesis is an error."""
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise KeyError(f"{len(missing)} utterances have no hypothesis (e.g. '{missing[0]}')")
    total = ErrorCounts()
    for utt in sorted(refs):
        if unit == "word":
            r, h = refs[utt].split(), hyps[utt].split()
        elif unit == "char":  # spaces count as characters between words, not at the ends
            r, h = list(" ".join(refs[utt].split())), list(" ".join(hyps[utt].split()))
        else:
            raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
        total.add(align_counts(r, h))
    return total
