"""Draw a seeded speaker triplet test from probe experiments.

For every chosen (probe experiment, set, layer): ``per_layer`` triplets of that layer's vocoded
reconstructions (``decode_<set>/<layer>/wav.scp``). A is an utterance of speaker s1, B one of
s2 != s1, X a third utterance (neither A's nor B's) of s1 or s2. Half the triplets of a layer have
X from A's speaker, half from B's (one more of either when ``per_layer`` is odd), shuffled.

Each layer draws from its own generator seeded by ``(seed, experiment name, set, layer)``, so
adding an experiment or a layer to the test leaves the triplets of the others unchanged, and
different layers get different utterances (a rater who heard the same triplet in every layer
would learn its answer from the words).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from espnet_probe.scoring.layer_scores import ScoreJob, probe_exp_jobs, probe_exp_labels
from espnet_probe.utils.kaldi_dir import read_table

SAMPLE_RATE = 16000


class ListeningTestError(ValueError):
    """The test cannot be built as asked (missing audio, too few speakers or utterances)."""


@dataclass(frozen=True)
class Stimulus:
    utt: str
    speaker: str
    path: Path  # resolved; lies inside its probe experiment


@dataclass(frozen=True)
class Triplet:
    exp: str  # probe experiment dir name
    model: str
    training: str
    set_name: str  # the decoded condition, e.g. test_snr10
    layer: str
    layer_index: int
    a: Stimulus
    b: Stimulus
    x: Stimulus

    @property
    def answer(self) -> str:
        """``A`` when X is A's speaker, else ``B``."""
        return "A" if self.x.speaker == self.a.speaker else "B"


def layer_stimuli(exp: Path, job: ScoreJob, utt2spk: dict[str, str],
                  utt2spk_path: Path) -> dict[str, list[tuple[str, str]]]:
    """speaker -> sorted (utt, wav.scp entry) of one layer's vocoded utterances."""
    by_speaker: dict[str, list[tuple[str, str]]] = {}
    for utt, entry in read_table(job.wav_scp).items():
        if utt not in utt2spk:
            raise ListeningTestError(f"{job.wav_scp}: utterance '{utt}' is not in {utt2spk_path}")
        by_speaker.setdefault(utt2spk[utt], []).append((utt, entry))
    return {spk: sorted(utts) for spk, utts in sorted(by_speaker.items())}


def draw_triplets(by_speaker: dict[str, list], n: int, rng: random.Random,
                  where: str) -> list[tuple[tuple, tuple, tuple]]:
    """``n`` (a, b, x) items from ``speaker -> items``; a and b of different speakers, x another
    item of a's speaker for half of them and of b's for the other half."""
    speakers = sorted(by_speaker)
    if len(speakers) < 2:
        raise ListeningTestError(f"{where}: {len(speakers)} speaker(s) ({', '.join(speakers) or 'none'}); "
                                 "a triplet needs two")
    lonely = [s for s in speakers if len(by_speaker[s]) < 2]
    if lonely:
        raise ListeningTestError(
            f"{where}: speaker(s) {', '.join(lonely)} have a single utterance; X must be a third "
            "utterance, different from A and B, of A's or B's speaker (vocode more utterances)")
    targets = ["A", "B"] * ((n + 1) // 2)
    rng.shuffle(targets)
    triplets = []
    for target in targets[:n]:
        s1, s2 = rng.sample(speakers, 2)
        a, b = rng.choice(by_speaker[s1]), rng.choice(by_speaker[s2])
        pool = [item for item in by_speaker[s1 if target == "A" else s2] if item not in (a, b)]
        triplets.append((a, b, rng.choice(pool)))
    return triplets


def checked_stimulus(utt: str, speaker: str, entry: str, exp: Path, wav_scp: Path) -> Stimulus:
    """A wav.scp entry as a stimulus: a readable 16 kHz mono file inside the experiment."""
    if entry.endswith("|"):
        raise ListeningTestError(f"{wav_scp}: '{utt}' is a command ({entry}); the test serves files")
    path = Path(entry).resolve()  # relative entries: the recipe dir, as everywhere in Kaldi
    if not path.is_file():
        raise ListeningTestError(f"{wav_scp}: audio of '{utt}' not found: {entry} (relative paths "
                                 "are read from the current directory: run from the recipe dir)")
    if not path.is_relative_to(exp.resolve()):
        raise ListeningTestError(f"{wav_scp}: audio of '{utt}' ({path}) lies outside the "
                                 f"experiment {exp}; only files inside it are served")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ListeningTestError(f"{path}: not readable audio ({e})") from None
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise ListeningTestError(f"{path}: {info.samplerate} Hz, {info.channels} channel(s); "
                                 f"expected {SAMPLE_RATE} Hz mono")
    return Stimulus(utt, speaker, path)


def build_test(exps: list[Path], data: Path, sets: list[str], layers: list[str] | None,
               per_layer: int, seed: int) -> list[Triplet]:
    """Every triplet of the test, in experiment, set and layer order. Raises ListeningTestError,
    and DataDirError / LayerScoringError for malformed Kaldi tables or decode dirs."""
    if per_layer < 1:
        raise ListeningTestError(f"per_layer must be >= 1, got {per_layer}")
    speakers: dict[str, dict[str, str]] = {}
    for set_name in sets:
        speakers[set_name] = read_table(Path(data) / set_name / "utt2spk")
    used_layers: set[str] = set()
    triplets = []
    for exp in exps:
        model, training = probe_exp_labels(exp)
        jobs = probe_exp_jobs(exp)
        for set_name in sets:
            set_jobs = [j for j in jobs if j.set_name == set_name]
            if not set_jobs:
                raise ListeningTestError(f"{exp}: no decode_{set_name}/summary.json "
                                         f"(set {set_name} was not probe-decoded)")
            chosen = [j for j in set_jobs if layers is None or j.layer in layers]
            if not chosen:  # e.g. the oracle, whose only layer is "original"
                print(f"listening_test: skipping {exp.name}/{set_name}: none of the layers "
                      f"{', '.join(layers)} (it has {', '.join(j.layer for j in set_jobs)})",
                      file=sys.stderr)
            for job in chosen:
                if job.wav_scp is None:
                    scp = exp / f"decode_{set_name}" / job.layer / "wav.scp"
                    if layers is not None:
                        raise ListeningTestError(f"{scp}: not found (layer {job.layer} was not vocoded)")
                    print(f"listening_test: skipping {exp.name}/{set_name}/{job.layer}: not vocoded "
                          f"({scp} missing)", file=sys.stderr)
                    continue
                used_layers.add(job.layer)
                utt2spk = speakers[set_name]
                by_speaker = layer_stimuli(exp, job, utt2spk, Path(data) / set_name / "utt2spk")
                rng = random.Random(f"{seed}/{exp.name}/{set_name}/{job.layer}")
                for a, b, x in draw_triplets(by_speaker, per_layer, rng, str(job.wav_scp)):
                    a, b, x = (checked_stimulus(utt, utt2spk[utt], entry, exp, job.wav_scp)
                               for utt, entry in (a, b, x))
                    triplets.append(Triplet(exp.name, model, training, set_name, job.layer,
                                            job.layer_index, a, b, x))
    unknown = sorted(set(layers or ()) - used_layers)
    if unknown:
        raise ListeningTestError(f"layer(s) {', '.join(unknown)} found in none of the experiments")
    return triplets
