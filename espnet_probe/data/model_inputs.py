"""What each model reads from a dump dir: the one path shared by every tool that runs a model.

A dump dir ``dump/fbank/<set>/`` holds both kinds of model input:
  feats.scp / feats_shape   (T, 240) features (this project's models)
  wave.scp  / wave_shape    (N,) float32 samples in [-1, 1] (models with their own frontend,
                            e.g. every egs2 asr.sh model); written by ``dump_waves``
Which one a model takes is ``espnet_probe.asr.model_input.model_input(model).kind``; ASR decoding,
probe training and decoding, and the speaker-ID probe all open it through ``open_inputs``, so
a model is never given the other kind.

``dump_waves`` writes wave.* from the data dir's audio (the same reader the features use) and
checks every utterance against its features (``1 + samples // hop == frames``), so a layer's
time axis and the target log-mel's describe the same samples.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
import yaml

from espnet_probe.audio.io import load_utterance
from espnet_probe.families import waveform_encoders
from espnet_probe.utils.fileio import atomic_open, atomic_path
from espnet_probe.utils.freshness import Stamp, fingerprint
from espnet_probe.utils.kaldi_dir import load_data_dir, read_table, write_table
from espnet_probe.utils.yaml_io import load_yaml

INPUT_FILES = {"feats": ("feats.scp", "feats_shape"), "wave": ("wave.scp", "wave_shape")}


# ESPnet encoders that compute their own features from the waveform (the layer map's
# takes_wave): their configs set input_size (1) so that ESPnet builds no frontend, yet the
# model is given the waveform
WAVEFORM_ENCODERS = waveform_encoders()


def input_kind(conf: dict) -> str:
    """What the model of an ESPnet ASR training config takes, as ESPnet's ASRTask.build_model
    decides it: an ``input_size`` means features and no frontend, none means a frontend over
    the waveform; a waveform encoder takes the waveform either way.
    (``espnet_probe.asr.model_input.model_input`` says the same of a built model.)"""
    if conf.get("encoder") in WAVEFORM_ENCODERS:
        return "wave"
    return "feats" if conf.get("input_size") is not None else "wave"


def config_input_kind(asr_config: str | Path) -> str:
    """``input_kind`` of a config.yaml."""
    with open(asr_config, encoding="utf-8") as f:
        return input_kind(load_yaml(f) or {})


class ModelInputError(ValueError):
    """A dump dir does not hold (usable) input of the kind a model takes."""


@dataclass
class InputSet:
    """The input of one kind for every utterance of a dump dir."""

    kind: str
    scp: Path
    entries: dict[str, str]
    lengths: dict[str, int]  # frames (feats) or samples (wave)

    def read(self, utt: str) -> np.ndarray:
        """One utterance, checked: (T, D) features or (N,) samples, finite, length as listed."""
        try:
            mat = kaldiio.load_mat(self.entries[utt])
        except KeyError:
            raise ModelInputError(f"{self.scp}: no entry for utterance {utt}") from None
        want = 2 if self.kind == "feats" else 1
        if mat.ndim != want or mat.shape[0] == 0:
            raise ModelInputError(f"{self.scp}: utterance {utt} has shape {mat.shape}, expected "
                                  + ("(T>0, D) features" if want == 2 else "(N>0,) samples"))
        if mat.shape[0] != self.lengths[utt]:
            raise ModelInputError(f"{self.scp}: utterance {utt} has length {mat.shape[0]}, its "
                                  f"shape file says {self.lengths[utt]}")
        if not np.isfinite(mat).all():
            raise ModelInputError(f"{self.scp}: utterance {utt} has NaN/inf values")
        return np.array(mat, dtype=np.float32)  # writable, for torch.from_numpy


def open_inputs(dump_dir: str | Path, kind: str) -> InputSet:
    """The ``kind`` ("feats" | "wave") input of a dump dir, with lengths from its shape file."""
    if kind not in INPUT_FILES:
        raise ValueError(f"kind must be one of {sorted(INPUT_FILES)}, got {kind!r}")
    dump_dir = Path(dump_dir)
    scp_name, shape_name = INPUT_FILES[kind]
    scp = dump_dir / scp_name
    if not scp.is_file():
        hint = (" (the model takes waveforms: stage 3 dumps them when --asr_exps is given, or run "
                f"python -m espnet_probe.bin.dump_waves --data_dir data/{dump_dir.name} "
                f"--dump_dir {dump_dir})") if kind == "wave" else " (run stage 3)"
        raise ModelInputError(f"{scp} not found{hint}")
    entries = read_table(scp)
    if not entries:
        raise ModelInputError(f"{scp} is empty")
    shape_file = dump_dir / shape_name
    if shape_file.is_file():
        lengths = {}
        for utt, shape in read_table(shape_file).items():
            try:
                lengths[utt] = int(shape.split(",")[0])
            except ValueError:
                raise ModelInputError(f"{shape_file}: utterance {utt} has shape {shape!r}") from None
        missing = sorted(set(entries) - set(lengths))
        if missing:
            raise ModelInputError(f"{shape_file}: utterance {missing[0]} of {scp} has no shape "
                                  f"({len(missing)} missing)")
    else:
        lengths = {utt: kaldiio.load_mat(loc).shape[0] for utt, loc in entries.items()}
    return InputSet(kind, scp, entries, lengths)


def dump_waves(data_dir: str | Path, dump_dir: str | Path, hop: int = 160,
               sample_rate: int = 16000) -> int:
    """Write ``wave.{ark,scp}`` and ``wave_shape`` of a featurised set; returns utterances written
    (0 when an up-to-date dump exists).  Atomic: the scp names the ark only once both exist."""
    data_dir, dump_dir = Path(data_dir), Path(dump_dir)
    if not Stamp(dump_dir).is_done():
        raise ModelInputError(f"{dump_dir}: features are incomplete (not stamped done); "
                              "run stage 3 first")
    # the features' scp too: re-dumped features may cut the audio into other frames
    stamp = Stamp(dump_dir, "wave")
    settings = {"hop": hop, "sample_rate": sample_rate, "data": fingerprint(data_dir),
                "features": fingerprint(dump_dir / "feats.scp")}
    owned = [dump_dir / name for name in ("wave.ark", "wave.scp", "wave_shape")]
    if stamp.begin(settings, owned, resumable=False) == "done":
        return 0
    data = load_data_dir(data_dir, require_text=False)
    frames = {u: int(v) for u, v in read_table(dump_dir / "utt2num_frames").items()}
    ark = dump_dir / "wave.ark"
    scp_lines, shapes = [], {}
    with atomic_path(ark) as tmp:
        with open(tmp, "wb") as f:
            for utt in data.utt_ids:
                wav = load_utterance(data, utt, sample_rate)
                if utt not in frames:
                    raise ModelInputError(f"{dump_dir / 'utt2num_frames'}: no utterance {utt} "
                                          f"of {data_dir}")
                if 1 + wav.size // hop != frames[utt]:
                    raise ModelInputError(
                        f"utterance {utt}: {wav.size} samples give {1 + wav.size // hop} frames "
                        f"at hop {hop}, its features have {frames[utt]}: the audio changed since "
                        "stage 3 (re-run it)")
                f.write(f"{utt} ".encode())
                offset = f.tell()
                kaldiio.save_mat(f, wav.astype(np.float32))
                scp_lines.append(f"{utt} {ark}:{offset}")
                shapes[utt] = str(wav.size)
    with atomic_open(dump_dir / "wave.scp") as f:
        f.write("\n".join(scp_lines) + "\n")
    write_table(dump_dir / "wave_shape", shapes)
    stamp.finish(settings, utterances=len(shapes))
    print(f"dump_waves {dump_dir.name}: {len(shapes)} utterances", file=sys.stderr)
    return len(shapes)
