"""Probe decoding: every probed layer's predicted log-mel for a feature set, as ark/scp.

Writes ``<out_dir>/<layer>/mel.{ark,scp}`` (float32 (T, n_mels), T = the input's frames) and
the decode summary (probe/summary.py) with, per layer, its record, the L1 to the log-mel the
encoder heard and, when the set has a ``target.scp`` (noisy sets: the clean log-mel), the L1 to
the clean log-mel.
The directory is built under a temporary name and swapped in whole; a finished directory with
the same settings is kept as it is on re-runs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from espnet_probe.asr.decode import length_sorted_batches
from espnet_probe.data.model_inputs import open_inputs
from espnet_probe.layer_record import Layer
from espnet_probe.probe.summary import DecodedLayer, DecodeSummary, read_summary, write_summary
from espnet_probe.utils.device import model_device
from espnet_probe.utils.fileio import atomic_dir
from espnet_probe.utils.freshness import Stamp, fingerprint
from espnet_probe.utils.kaldi_dir import read_table

log = logging.getLogger(__name__)


class ProbeDecodeError(RuntimeError):
    """The feature set or probe model cannot be decoded as asked."""


def _check_matrix(mat: np.ndarray, utt: str, where: Path, dim: Optional[int]) -> None:
    if mat.ndim != 2 or mat.shape[0] == 0 or (dim is not None and mat.shape[1] != dim):
        raise ProbeDecodeError(f"{where}: utterance {utt} has shape {mat.shape}, expected (T>0, {dim})")
    if not np.isfinite(mat).all():
        raise ProbeDecodeError(f"{where}: utterance {utt} has NaN/inf values")


class HeardMel:
    """Stand-in for a ProbeModel whose only "layer" returns the heard log-mel itself.

    Decoding with it writes the oracle: the original (possibly noisy) log-mel, vocoded like
    every layer so vocoder loss and probe loss can be told apart.
    """

    def __init__(self, n_mels: int = 80, period: float = 0.01):
        self.n_mels = n_mels
        # the features themselves: centred frames, one per input frame
        self.layers = (Layer("original", 0, n_mels, 1, period, -period / 2),)
        self.layer_names = [layer.name for layer in self.layers]

    def eval(self):
        return self

    def predict(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"original": speech[..., : self.n_mels]}


def decode_set(model, feats_dir: str | Path, out_dir: str | Path, batch_frames: int = 2000,
               settings: Optional[dict] = None) -> DecodeSummary:
    """Run every probe of ``model`` (a ProbeModel) over a dump dir, on the input its ASR model
    takes (features, or waveforms for a model with a frontend); the target frames are always
    those of the dir's feats.scp."""
    feats_dir, out_dir = Path(feats_dir), Path(out_dir)
    # keyed by what the features are, not where: a stage-3 redo in place makes a new decode; and
    # by the layers' records, so a decode whose summary lacks them is made again
    settings = dict(settings or {}, feats=str(feats_dir / "feats.scp"),
                    feats_fingerprint=fingerprint(feats_dir),
                    layers=[asdict(layer) for layer in model.layers])
    if Stamp(out_dir).state(settings) == "done":
        log.info("%s: already decoded, skipped", out_dir)
        return read_summary(out_dir)

    feats = open_inputs(feats_dir, "feats")  # the heard log-mel and the target frames
    kind = getattr(getattr(model, "input", None), "kind", "feats")
    speech = feats if kind == "feats" else open_inputs(feats_dir, kind)
    if set(speech.entries) != set(feats.entries):
        raise ProbeDecodeError(f"{speech.scp} and {feats.scp} list different utterances "
                               f"(e.g. {sorted(set(speech.entries) ^ set(feats.entries))[:3]})")
    target_scp = feats_dir / "target.scp"
    targets = read_table(target_scp) if target_scp.is_file() else None
    if targets is not None and set(targets) != set(feats.entries):
        raise ProbeDecodeError(
            f"{target_scp} and {feats.scp} list different utterances "
            f"(e.g. {sorted(set(targets) ^ set(feats.entries))[:3]})")
    n_mels = model.n_mels
    hop = 160 if kind == "wave" else 1
    sums = {name: {"heard": 0.0, "clean": 0.0} for name in model.layer_names}
    total_frames = 0
    model.eval()
    device = model_device(model)
    with atomic_dir(out_dir) as tmp:
        writers = {}
        for name in model.layer_names:
            (tmp / name).mkdir()
            writers[name] = kaldiio.WriteHelper(f"ark,scp:{tmp / name / 'mel.ark'},{tmp / name / 'mel.scp'}")
        try:
            for batch in tqdm(length_sorted_batches(speech.lengths, batch_frames * hop),
                              desc=f"probe_decode {feats_dir.name}", unit="batch", mininterval=5,
                              disable=None):
                batch = sorted(batch, key=lambda u: (-speech.lengths[u], u))
                mats = [torch.from_numpy(speech.read(u)) for u in batch]
                x = torch.nn.utils.rnn.pad_sequence(mats, batch_first=True)
                lens = torch.tensor([m.shape[0] for m in mats])
                with torch.no_grad():
                    preds = {name: pred.cpu()
                             for name, pred in model.predict(x.to(device), lens.to(device)).items()}
                for i, utt in enumerate(batch):
                    heard = feats.read(utt)[:, :n_mels]
                    t = heard.shape[0]
                    clean = None
                    if targets is not None:
                        clean = kaldiio.load_mat(targets[utt])
                        _check_matrix(clean, utt, target_scp, n_mels)
                        if clean.shape[0] != t:
                            raise ProbeDecodeError(
                                f"{target_scp}: utterance {utt} has {clean.shape[0]} frames, "
                                f"its features {t}")
                    for name, pred in preds.items():
                        if pred.size(1) < t:
                            raise ProbeDecodeError(
                                f"layer {name} predicts {pred.size(1)} frames for utterance {utt}, "
                                f"its features have {t}")
                        mel = pred[i, :t].numpy().astype(np.float32)
                        writers[name](utt, mel)
                        sums[name]["heard"] += float(np.abs(mel - heard).sum())
                        if clean is not None:
                            sums[name]["clean"] += float(np.abs(mel - clean).sum())
                    total_frames += t
        finally:
            for w in writers.values():
                w.close()
        for name in model.layer_names:  # scp entries must name the final location
            scp = tmp / name / "mel.scp"
            final_ark = out_dir / name / "mel.ark"
            lines = []
            for line in scp.read_text().splitlines():
                utt, loc = line.split(maxsplit=1)
                lines.append(f"{utt} {final_ark}:{loc.rsplit(':', 1)[1]}")
            scp.write_text("\n".join(lines) + "\n")
        denom = total_frames * n_mels
        summary = DecodeSummary(out_dir, feats_dir.name, len(feats.entries), total_frames, kind, tuple(
            DecodedLayer(layer, round(sums[layer.name]["heard"] / denom, 5),
                         round(sums[layer.name]["clean"] / denom, 5) if targets is not None else None)
            for layer in model.layers))
        write_summary(tmp, summary)
        Stamp(tmp).finish(settings)  # swapped in with the decode: all of it or none
    return summary
