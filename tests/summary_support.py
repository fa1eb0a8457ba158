"""Decode dirs for tests: summary.json through the one writer (espnet_probe/probe/summary.py)."""

from __future__ import annotations

from pathlib import Path

from espnet_probe.layer_record import Layer
from espnet_probe.probe.summary import DecodedLayer, DecodeSummary, write_summary


def write_decode_summary(decode_dir: Path, layers, l1_heard: dict | None = None,
                         l1_clean: dict | None = None) -> DecodeSummary:
    """``decode_dir/summary.json`` of set ``decode_<set>``: ``layers`` (names) in encoder order,
    each 80-dim at 10 ms, with the given L1 per name (0 when not given; no clean L1 unless given)."""
    decode_dir = Path(decode_dir)
    decode_dir.mkdir(parents=True, exist_ok=True)
    l1_heard, l1_clean = l1_heard or {}, l1_clean or {}
    summary = DecodeSummary(decode_dir, decode_dir.name.removeprefix("decode_"), 3, 300, "feats", tuple(
        DecodedLayer(Layer(name, index, 80, 1, 0.01, -0.005), l1_heard.get(name, 0.0),
                     l1_clean.get(name)) for index, name in enumerate(layers)))
    write_summary(decode_dir, summary)
    return summary
