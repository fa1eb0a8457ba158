"""The one description of a hidden layer: what listing, probing, decoding and the reports share.

Torch-free, so report and listening code can name layers without loading a model.  The hidden
states travel beside a record (``espnet_probe.layers.LayerStates``), never inside it; encoders
report their layers in their own input frames and ``layers.extract_layers`` makes the records.
"""

from __future__ import annotations

from dataclasses import dataclass

# the JSON fields of a record besides its name (a decode summary keys layers by name)
FIELDS = ("index", "dim", "frame_rate", "period", "offset")


@dataclass(frozen=True)
class Layer:
    """A named layer of an ASR model's encoder; ``index`` 0 is ``input`` (what the encoder saw)."""

    name: str
    index: int  # position in encoder order
    dim: int  # values per frame
    frame_rate: int  # the model's input frames per frame of this layer
    period: float  # seconds per frame
    offset: float  # seconds: frame j spans [offset + j * period, offset + (j + 1) * period)

    def to_json(self) -> dict:
        return {field: getattr(self, field) for field in FIELDS}

    @classmethod
    def from_json(cls, name: str, fields: dict, where: str) -> "Layer":
        """The record of ``name`` from ``to_json``'s fields; ``where`` names the file in errors."""
        missing = [f for f in FIELDS if f not in fields]
        if missing:
            raise ValueError(f"{where}: layer {name!r} lacks {', '.join(missing)}")
        kinds = {"index": int, "dim": int, "frame_rate": int, "period": (int, float),
                 "offset": (int, float)}
        wrong = [f for f, kind in kinds.items()
                 if not isinstance(fields[f], kind) or isinstance(fields[f], bool)]
        if wrong:
            raise ValueError(f"{where}: layer {name!r} has a non-numeric {', '.join(wrong)}")
        return cls(name, fields["index"], fields["dim"], fields["frame_rate"],
                   float(fields["period"]), float(fields["offset"]))
