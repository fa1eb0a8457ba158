"""The decode summary: what probe decoding (probe/decode.py) made in ``decode_<set>/``, as a record.

``summary.json`` holds the set, its utterances and target frames, the input kind the ASR model
took (``feats`` or ``wave``) and, per layer in encoder order, the L1 to the heard log-mel
(``l1_heard``), to the clean one when the set has a ``target.scp`` (``l1_clean``), and the
layer's record (espnet_probe.layer_record).  Each layer's files live in ``<layer>/``:
``mel.scp`` (from decoding), ``wav.scp`` (once vocoded).  Torch-free: the reports, the scorer
and the listening test read it without loading a model; ``read_summary`` is its only reader
and ``write_summary`` its only writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from espnet_probe.layer_record import Layer
from espnet_probe.utils.fileio import atomic_open

SUMMARY = "summary.json"
INPUT_KINDS = ("feats", "wave")


class DecodeSummaryError(ValueError):
    """A decode dir without a readable summary."""


@dataclass(frozen=True)
class DecodedLayer:
    """A decoded layer's record and the L1 of its predicted log-mel (per frame and bin)."""

    layer: Layer
    l1_heard: float
    l1_clean: Optional[float]  # None: the set has no clean target

    def to_json(self) -> dict:
        clean = {} if self.l1_clean is None else {"l1_clean": self.l1_clean}
        return {"l1_heard": self.l1_heard, **clean, **self.layer.to_json()}


@dataclass(frozen=True)
class DecodeSummary:
    dir: Path  # decode_<set>; not written (the summary lies in it)
    set_name: str
    utterances: int
    frames: int
    input: str  # the kind of input the ASR model took: feats | wave
    layers: tuple[DecodedLayer, ...]  # encoder order

    @property
    def layer_names(self) -> list[str]:
        return [d.layer.name for d in self.layers]

    def mel_scp(self, name: str) -> Path:
        return self.dir / name / "mel.scp"

    def wav_scp(self, name: str) -> Path:
        return self.dir / name / "wav.scp"

    def to_json(self) -> dict:
        return {"set": self.set_name, "utterances": self.utterances, "frames": self.frames,
                "input": self.input, "layers": {d.layer.name: d.to_json() for d in self.layers}}


def write_summary(directory: Path, summary: DecodeSummary) -> None:
    """``directory/summary.json`` (``directory`` may be the temporary twin of ``summary.dir``)."""
    with atomic_open(Path(directory) / SUMMARY) as f:
        f.write(json.dumps(summary.to_json(), indent=1))


def read_summary(decode_dir: Path) -> DecodeSummary:
    """The summary of one decode dir; DecodeSummaryError naming the file if missing or malformed."""
    decode_dir = Path(decode_dir)
    path = decode_dir / SUMMARY
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DecodeSummaryError(f"{path}: not found (run probe decoding first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DecodeSummaryError(f"{path}: not a decode summary ({e})") from None
    try:
        return _summary_of(data, decode_dir, str(path))
    except ValueError as e:
        raise DecodeSummaryError(str(e)) from None


def _summary_of(data, decode_dir: Path, where: str) -> DecodeSummary:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: not a decode summary (no JSON object)")
    missing = [k for k in ("set", "utterances", "frames", "input", "layers") if k not in data]
    if missing:
        raise ValueError(f"{where}: not a decode summary: no {', '.join(missing)}")
    wrong = [k for k, kind in (("set", str), ("utterances", int), ("frames", int))
             if not isinstance(data[k], kind) or isinstance(data[k], bool)]
    if wrong:
        raise ValueError(f"{where}: {', '.join(wrong)} of the wrong type")
    if data["input"] not in INPUT_KINDS:
        raise ValueError(f"{where}: input {data['input']!r} is not one of {', '.join(INPUT_KINDS)}")
    layers = data["layers"]
    if not isinstance(layers, dict) or not layers:
        raise ValueError(f"{where}: 'layers' must map each decoded layer's name to its fields")
    decoded = []
    for name, fields in layers.items():
        if not isinstance(fields, dict) or not _is_number(fields.get("l1_heard")):
            raise ValueError(f"{where}: layer {name!r} has no numeric l1_heard")
        clean = fields.get("l1_clean")
        if clean is not None and not _is_number(clean):
            raise ValueError(f"{where}: layer {name!r} has a non-numeric l1_clean")
        try:
            layer = Layer.from_json(name, fields, where)
        except ValueError as e:  # e.g. decoded before summaries held the layers' records
            raise ValueError(f"{e}; probe decoding writes it: decode again") from None
        decoded.append(DecodedLayer(layer, float(fields["l1_heard"]),
                                    None if clean is None else float(clean)))
    indices = [d.layer.index for d in decoded]
    if indices != sorted(set(indices)):
        raise ValueError(f"{where}: layers are not in encoder order (indices {indices})")
    return DecodeSummary(decode_dir, data["set"], data["utterances"], data["frames"], data["input"],
                         tuple(decoded))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def decode_summaries(exp: Path) -> list[DecodeSummary]:
    """Every decoded set of a probe experiment, by decode dir name; none is an error."""
    paths = sorted(Path(exp).glob(f"decode_*/{SUMMARY}"))
    if not paths:
        raise DecodeSummaryError(f"{exp}: no decode_<set>/{SUMMARY} (run probe decoding first)")
    return [read_summary(path.parent) for path in paths]
