"""A speaker encoder as the scorers see it (``Embedder``), its embeddings cache and the scoring
of a wav.scp on a trial list (``score_speaker``): cosine scores, EER and minDCF with bootstrap
CIs.  The encoders are speaker/ge2e.py (GE2E) and speaker/embed.py (our ThinResNet)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from espnet_probe.metrics.trials import Trials, TrialsError
from espnet_probe.metrics.verification import verification_result
from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.freshness import entry_fingerprint
from espnet_probe.utils.kaldi_dir import read_table

INT16_MAX = 2 ** 15 - 1  # digital silence: no sample reaches half a 16-bit step


class SpeakerScoringError(RuntimeError):
    pass


@dataclass(frozen=True)
class Embedder:
    """A speaker encoder as the scorers see it: ``embed(entries, nj)`` -> (utts, (N, D) unit
    vectors, statuses); ``tag`` names the encoder *and its weights* in cache digests."""

    name: str
    tag: str
    embed: object  # Callable[[list[tuple[str, str]], int], tuple[list, np.ndarray, list]]
    statuses: tuple  # "ok" first; the others are counted in result.json

    def status_report(self, utts: list[str], status: list[str]) -> dict:
        kinds = [s for s in self.statuses if s != "ok"]
        kinds += sorted(set(status) - set(self.statuses))
        return {k: {"count": sum(v == k for v in status),
                    "ids": sorted(u for u, v in zip(utts, status) if v == k)} for k in kinds}


def cosine_scores(emb: dict[str, np.ndarray] | tuple[list[str], np.ndarray],
                  trials: Trials) -> np.ndarray:
    """Cosine similarity of each trial's two embeddings."""
    if isinstance(emb, tuple):
        utts, mat = emb
    else:
        utts, mat = list(emb), np.stack(list(emb.values()))
    index = {u: i for i, u in enumerate(utts)}
    missing = sorted({u for a, b, _ in trials.pairs for u in (a, b) if u not in index})
    if missing:
        raise TrialsError(f"{len(missing)} trial utterances have no embedding "
                          f"(e.g. '{missing[0]}')")
    mat = np.asarray(mat, dtype=np.float64)
    mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    a = np.array([index[x] for x, _, _ in trials.pairs])
    b = np.array([index[y] for _, y, _ in trials.pairs])
    return np.einsum("ij,ij->i", mat[a], mat[b])


def entries_digest(entries: list[tuple[str, str]], encoder_tag: str) -> str:
    """Changes when the audio, the utterance list or the encoder (``encoder_tag``) changes."""
    h = hashlib.sha1(encoder_tag.encode())
    for utt, entry in entries:
        h.update(f"{utt}\t{entry_fingerprint(entry)}\n".encode())
    return h.hexdigest()


def load_embeddings(path: Path, digest: str | None = None):
    """(utts, embeddings, statuses) from an embeddings.npz, or None if absent or stale."""
    if not path.exists():
        return None
    with np.load(path) as z:
        if digest is not None and str(z["digest"]) != digest:
            return None
        return list(z["utts"]), z["embeddings"], list(z["status"])


def save_embeddings(path: Path, utts: list[str], emb: np.ndarray, status: list[str],
                    digest: str) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, utts=np.array(utts), embeddings=emb, status=np.array(status),
                 digest=np.array(digest))


def trial_entries(wav_scp: str | Path, trials: Trials) -> list[tuple[str, str]]:
    """(utt, wav.scp entry) of every utterance the trials use; a missing one is an error."""
    scp = read_table(wav_scp)
    needed = trials.utterances()
    missing = [u for u in needed if u not in scp]
    if missing:
        named = ", ".join(f"'{u}'" for u in missing[:3])
        raise SpeakerScoringError(f"{wav_scp}: {len(missing)} trial utterances are missing "
                                  f"(e.g. {named})")
    return [(u, scp[u]) for u in needed]


def score_speaker(wav_scp: str | Path, trials: Trials, out_dir: str | Path, nj: int = 1,
                  n_boot: int = 1000, seed: int = 0, p_target: float = 0.01,
                  c_miss: float = 1.0, c_fa: float = 1.0, *, embedder: Embedder) -> dict:
    """Embed every trial utterance of ``wav_scp``, score the trials, write the results:
    OUT/embeddings.npz (reused while the audio and encoder are unchanged), OUT/scores and
    OUT/result.json."""
    out_dir = Path(out_dir)
    entries = trial_entries(wav_scp, trials)
    digest = entries_digest(entries, embedder.tag)
    emb_path = out_dir / "embeddings.npz"
    cached = load_embeddings(emb_path, digest)
    if cached is not None:
        utts, emb, status = cached
        print(f"score_speaker: reusing {emb_path} ({len(utts)} embeddings)", file=sys.stderr)
    else:
        utts, emb, status = embedder.embed(entries, nj)
        save_embeddings(emb_path, utts, emb, status, digest)
    scores = cosine_scores((utts, emb), trials)
    labels = np.array([t for *_, t in trials.pairs])
    with atomic_open(out_dir / "scores") as f:
        for (a, b, t), s in zip(trials.pairs, scores):
            f.write(f"{a} {b} {s:.8f} {'target' if t else 'nontarget'}\n")
    result = verification_result(scores, labels, n_boot, seed, p_target, c_miss, c_fa)
    result.update({"encoder": embedder.name, "scoring": "cosine", "wav_scp": str(wav_scp),
                   "n_utts": len(utts), "preprocess": embedder.status_report(utts, status)})
    with atomic_open(out_dir / "result.json") as f:
        json.dump(result, f, indent=1)
    return result
