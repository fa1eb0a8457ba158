"""Linear speaker-ID probe: how much speaker identity each encoder layer keeps per utterance.

A second line of evidence beside reconstruct-and-verify (stages 7-9): no probe network, no
vocoder, no speaker-verification model in between, only a linear classifier on each layer.

Decisions:

* Speakers and split.  The probe reads the ASR *training* set (its speakers are the ones the
  encoder was trained on, and each has enough utterances to learn from).  Every speaker's
  utterances are split into probe-train and held-out with a generator seeded by
  ``(seed, crc32(speaker))``, so one speaker's split does not depend on which other speakers
  are present.  ``n_held = floor(held_out * n + 0.5)``, clipped to ``1 .. n - 1`` so every
  speaker is both learnt and tested; a speaker with fewer than 2 utterances is an error.
* Pooling.  Mean and standard deviation of the valid frames ("mean_std", the statistics
  pooling of x-vectors).  The std is kept by default because speaker cues such as pitch
  range live in how a layer varies, which averaging removes, and because narrow top layers
  (4 units in tests/fixtures/asr_tiny) would otherwise give the classifier 4 numbers.
  ``pooling="mean"`` is s3prl's SUPERB speaker-ID downstream (mean pooling + linear).
  The std is the population one, so a one-frame layer gives 0, not NaN.
* Classifier.  Multinomial logistic regression (sklearn, lbfgs: no randomness, so the
  result depends on the seed only through the split) on features standardised with the
  probe-train statistics, with a fixed C for every layer: no tuning on held-out data, and
  the same capacity everywhere, so layers compare.
* Score.  Accuracy on the held-out utterances with a 95 % Wilson interval (correct for
  proportions near 0 or 1, where the normal approximation leaves [0, 1]).
* One encoder pass per batch feeds every layer (``extract_layers``); only the pooled
  vectors are kept, so memory does not grow with the length of the set.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from espnet_probe.asr.decode import length_sorted_batches
from espnet_probe.asr.model_input import model_input
from espnet_probe.data.model_inputs import ModelInputError, open_inputs
from espnet_probe.layer_record import Layer
from espnet_probe.layers import extract_layers
from espnet_probe.metrics.proportion import wilson_interval
from espnet_probe.utils.device import model_device
from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.kaldi_dir import read_table

DEFAULT_C = 1.0
MAX_ITER = 2000
POOLINGS = ("mean", "mean_std")
PER_UTTERANCE = "per_utterance.csv"
CSV_COLUMNS = ["layer", "layer_index", "accuracy", "ci_low", "ci_high", "n", "n_speakers", "chance"]


class SpeakerProbeError(ValueError):
    """The feature set cannot be probed as asked (missing features, NaN, too few utterances)."""


@dataclass
class PooledLayer:
    layer: Layer
    features: np.ndarray  # (n_utts, F) float64, rows in the order of the utterances asked for


def split_by_speaker(utt2spk: dict[str, str], held_out: float = 0.25,
                     seed: int = 0) -> tuple[list[str], list[str]]:
    """(probe-train, held-out) utterance ids, both sorted; see the module doc for the rule."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must lie strictly between 0 and 1, got {held_out}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    spk2utts: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utts.setdefault(utt2spk[utt], []).append(utt)
    too_few = sorted(spk for spk, utts in spk2utts.items() if len(utts) < 2)
    if too_few:
        raise SpeakerProbeError(
            f"{len(too_few)} speaker(s) have fewer than 2 utterances and cannot be split into "
            f"probe-train and held-out: {', '.join(too_few)}")
    train, held = [], []
    for spk, utts in spk2utts.items():
        order = np.random.default_rng([seed, zlib.crc32(spk.encode())]).permutation(len(utts))
        n_held = min(len(utts) - 1, max(1, math.floor(held_out * len(utts) + 0.5)))
        held += [utts[i] for i in order[:n_held]]
        train += [utts[i] for i in order[n_held:]]
    return sorted(train), sorted(held)


def pool_hidden(hidden: torch.Tensor, lengths: torch.Tensor, pooling: str = "mean_std") -> np.ndarray:
    """(B, T, D) zero-padded hidden states -> (B, D) mean or (B, 2D) [mean, std] of valid frames."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    x = hidden.double()
    valid = (torch.arange(x.size(1), device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1).double()
    count = lengths.double()[:, None]
    mean = (x * valid).sum(1) / count
    if pooling == "mean":
        return mean.cpu().numpy()
    var = (((x - mean[:, None]) * valid) ** 2).sum(1) / count
    return torch.cat([mean, var.sqrt()], dim=-1).cpu().numpy()


@torch.no_grad()
def pooled_layers(model: torch.nn.Module, feats_scp: str | Path, utts: list[str],
                  batch_frames: int = 1000, pooling: str = "mean_std") -> list[PooledLayer]:
    """Pooled hidden states of every layer for ``utts``: one encoder pass per batch.

    ``feats_scp`` names the dump dir; a model with its own frontend reads the dir's wave.scp
    instead (espnet_probe.data.model_inputs), the others its feats.scp.
    """
    feats_scp = Path(feats_scp)
    kind = model_input(model).kind
    try:
        inputs = open_inputs(feats_scp.parent, kind)
    except ModelInputError as e:
        raise SpeakerProbeError(str(e)) from None
    unknown = [utt for utt in utts if utt not in inputs.entries]
    if unknown:
        raise SpeakerProbeError(f"{inputs.scp}: no input for utterance {unknown[0]} "
                                f"({len(unknown)} missing)")
    row_of = {utt: row for row, utt in enumerate(utts)}
    layers: dict[int, PooledLayer] = {}
    device = model_device(model)
    unit = 160 if kind == "wave" else 1  # batch_frames counts 10 ms frames either way
    batches = length_sorted_batches({utt: inputs.lengths[utt] for utt in utts}, batch_frames * unit)
    for batch in tqdm(batches, desc=f"speaker_id {feats_scp.parent.name}", unit="batch",
                      file=sys.stderr, mininterval=2):
        try:
            mats = [torch.from_numpy(inputs.read(utt)) for utt in batch]
        except ModelInputError as e:
            raise SpeakerProbeError(str(e)) from None
        feats = torch.nn.utils.rnn.pad_sequence(mats, batch_first=True)
        lengths = torch.tensor([m.shape[0] for m in mats])
        rows = [row_of[utt] for utt in batch]
        for layer, hidden, layer_lengths in extract_layers(model, feats.to(device), lengths.to(device)):
            if int(layer_lengths.min()) < 1:
                short = batch[int(layer_lengths.argmin())]
                raise SpeakerProbeError(f"{inputs.scp}: utterance {short} is too short to leave a "
                                        f"frame in layer {layer.name}")
            pooled = pool_hidden(hidden, layer_lengths, pooling)
            if not np.isfinite(pooled).all():
                bad = batch[int(np.flatnonzero(~np.isfinite(pooled).all(1))[0])]
                raise SpeakerProbeError(f"layer {layer.name} gives NaN/inf for utterance {bad} "
                                        f"of {inputs.scp}")
            if layer.index not in layers:
                layers[layer.index] = PooledLayer(layer, np.zeros((len(utts), pooled.shape[1])))
            layers[layer.index].features[rows] = pooled
    return [layers[index] for index in sorted(layers)]


def fit_and_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                    C: float = DEFAULT_C) -> tuple[np.ndarray, bool]:
    """Standardise, fit multinomial logistic regression, predict; also whether lbfgs converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    classifier = LogisticRegression(C=C, max_iter=MAX_ITER)
    with warnings.catch_warnings():
        # reported per layer in the results instead of once per layer on stderr
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(scaler.transform(train_x), train_y)
    converged = bool(np.max(classifier.n_iter_) < MAX_ITER)
    return classifier.predict(scaler.transform(test_x)), converged


def check_same_utterances(utt2spk: dict[str, str], utt2spk_path: Path,
                          feats: dict[str, str], feats_scp: Path) -> None:
    """Every utterance must have both a speaker and features."""
    for have, have_path, lack, lack_path, what in (
            (utt2spk, utt2spk_path, feats, feats_scp, "features"),
            (feats, feats_scp, utt2spk, utt2spk_path, "speaker")):
        missing = sorted(set(have) - set(lack))
        if missing:
            raise SpeakerProbeError(
                f"utterance {missing[0]} is in {have_path} but has no {what} in {lack_path} "
                f"({len(missing)} such utterance(s))")


def speaker_id_probe(model: torch.nn.Module, feats_dir: str | Path, held_out: float = 0.25,
                     seed: int = 0, batch_frames: int = 1000, pooling: str = "mean_std",
                     C: float = DEFAULT_C) -> dict:
    """Held-out speaker accuracy of a linear probe on every layer of ``model``.

    ``feats_dir`` holds ``feats.scp`` and ``utt2spk`` (and, optionally, ``feats_shape``).
    Returns the summary (speakers, split sizes, chance) and one row per layer.
    """
    feats_dir = Path(feats_dir)
    feats_scp, utt2spk_path = feats_dir / "feats.scp", feats_dir / "utt2spk"
    if not feats_scp.is_file():
        raise SpeakerProbeError(f"no feats.scp in {feats_dir}")
    utt2spk = read_table(utt2spk_path)
    check_same_utterances(utt2spk, utt2spk_path, read_table(feats_scp), feats_scp)
    train, held = split_by_speaker(utt2spk, held_out, seed)
    layers = pooled_layers(model, feats_scp, train + held, batch_frames, pooling)

    speakers = sorted(set(utt2spk.values()))
    label = {spk: i for i, spk in enumerate(speakers)}
    train_y = np.array([label[utt2spk[utt]] for utt in train])
    held_y = np.array([label[utt2spk[utt]] for utt in held])
    chance = 1.0 / len(speakers)
    rows = []
    for pooled in tqdm(layers, desc="speaker_id classifiers", unit="layer", file=sys.stderr,
                       mininterval=2):
        layer = pooled.layer
        predicted, converged = fit_and_predict(pooled.features[: len(train)], train_y,
                                               pooled.features[len(train):], C)
        hits = predicted == held_y
        correct = int(hits.sum())
        low, high = wilson_interval(correct, len(held))
        rows.append({
            "layer": layer.name, "layer_index": layer.index, "accuracy": round(correct / len(held), 5),
            "ci_low": round(low, 5), "ci_high": round(high, 5), "n": len(held),
            "n_speakers": len(speakers), "chance": round(chance, 5),
            "frame_rate": layer.frame_rate, "dim": pooled.features.shape[1], "converged": converged,
            "per_utterance": {"utts": held, "speaker": [speakers[y] for y in held_y],
                              "predicted": [speakers[y] for y in predicted],
                              "correct": [int(h) for h in hits]},
        })
    return {
        "set": feats_dir.name, "n_speakers": len(speakers), "n_probe_train": len(train),
        "n_held_out": len(held), "chance": round(chance, 5), "pooling": pooling, "C": C,
        "layers": rows,
    }


def write_results(out_dir: str | Path, results: dict) -> None:
    """results.csv (CSV_COLUMNS, one row per layer), per_utterance.csv (layer, utt, speaker,
    predicted, correct: what paired comparisons between experiments resample), then
    results.json, each atomically.

    results.json is written last: its presence means the run finished.
    """
    out_dir = Path(out_dir)
    with atomic_open(out_dir / PER_UTTERANCE) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["layer", "utt", "speaker", "predicted", "correct"])
        for row in results["layers"]:
            u = row["per_utterance"]
            writer.writerows(zip([row["layer"]] * len(u["utts"]), u["utts"], u["speaker"],
                                 u["predicted"], u["correct"]))
    with atomic_open(out_dir / "results.csv") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(results["layers"])
    with atomic_open(out_dir / "results.json") as f:
        json.dump(results, f, indent=1)
