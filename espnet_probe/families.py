"""The layer map: for every ESPnet2 encoder family and frontend, which modules are layers, what
their outputs hold and how their frames map to time.  Data only (no torch): ``layers.py`` reads
it to list, time and compute layers, and a family or frontend without an entry is refused with
the list of supported ones, never guessed.  Adding a family is one entry here plus its row in
the matrix test (tests/test_encoder_families.py); docs/DESIGN.md section 3 has the steps.

An entry names the encoder by its ESPnet ``encoder:`` choice and by the exact classes it covers
(module.Class; a subclass is not assumed to keep its parent's layers).  How its layers are
collected (``collect``):

* ``hooks``: forward hooks on the modules listed in ``hooks``, in order, then ``output`` (the
  encoder's own returned output, when it applies a final LayerNorm: ``output_when`` names the
  encoder attribute that must be true for that, empty for "always").  Every hooked layer runs
  at the encoder output's frame rate and is timed from the receptive field of the ``timing``
  module (``embed``, measured by layers.embed_timing; or an SSL encoder's convolutional feature
  extractor, asr/conv_timing.py), and its lengths are the encoder's output lengths.
* ``rnn``: ESPnet's RNN encoders, re-run one recurrent layer at a time with their own weights
  (their packed sequences cannot be hooked per layer).
* ``own``: the encoder lists its layers itself (``forward_layers``: this project's encoders).
* ``whisper``: ESPnet's Whisper encoder, computed as its forward computes it, utterance by
  utterance (espnet_probe.asr.whisper.espnet_encoder_layers).

A hooked module's output ``holds`` either ``frames`` ((B, T, D), or the first tensor of a tuple
such as (x, mask) or ((x, pos_emb), mask)) or ``blocks``: a contextual-block encoder's
(B, n_blocks, block_size + 2, D) tensors, stitched back onto the utterance's timeline by the
encoder's own rule (each block contributes its ``hop_size`` central frames; the look-ahead and
the two context vectors are dropped), so the last block layer equals the encoder's output
before its final LayerNorm, frame for frame.

``one_utterance``: the family is run on each utterance alone.  Contextual-block encoders split a
padded batch into blocks without a per-utterance mask, so a shorter utterance's last block would
read the padding; alone, each utterance is encoded as ESPnet's Speech2Text encodes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

FRAMES, BLOCKS = "frames", "blocks"


@dataclass(frozen=True)
class Hook:
    """A module whose output is a layer.  ``module`` is an attribute path from the encoder; a
    trailing ``.*`` stands for every child of that ModuleList, named ``name`` + 1-based index."""

    module: str
    name: str
    holds: str = FRAMES


@dataclass(frozen=True)
class Family:
    name: str  # ESPnet's encoder choice, as in config.yaml's ``encoder:``
    classes: Tuple[str, ...]  # module.Class of every encoder it covers
    collect: str  # "hooks" | "rnn" | "own" | "whisper"
    hooks: Tuple[Hook, ...] = ()
    timing: str = "embed"  # the module whose receptive field times every hooked layer
    output: bool = False  # add the encoder's returned output as layer "output"
    output_when: str = ""  # ... only when this encoder attribute (a dotted path; "not path") is true
    one_utterance: bool = False
    takes_wave: bool = False  # the encoder computes its own input from the waveform


@dataclass(frozen=True)
class Refused:
    name: str
    classes: Tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Frontend:
    """How the layers below the encoder are read: ``none`` (this project's features), ``stft``
    (ESPnet's default frontend, timed from its STFT), ``s3prl`` (an SSL upstream: every hidden
    layer, then the frontend's weighted sum)."""

    name: str  # ESPnet's frontend choice ("" = no frontend)
    classes: Tuple[str, ...]
    collect: str


ENC = "espnet2.asr.encoder."
OURS = "espnet_probe.asr."

# blocks from ESPnet's ``embed`` (input layer) and ``encoders`` (block list)
_BLOCKS = (Hook("embed", "subsample"), Hook("encoders.*", "block"))
_STREAMING = (Hook("embed", "subsample"), Hook("encoders.*", "block", BLOCKS))
_W2V = "hubert_pretrain_model.wav2vec2."  # torchaudio's Wav2Vec2Model inside ESPnet's HuBERT

FAMILIES: Tuple[Family, ...] = (
    Family("vgg_blstm", (OURS + "vgg_blstm.VGGBLSTMEncoder",), "own"),
    Family("blstm", (OURS + "blstm.BLSTMEncoder",), "own"),
    Family("conformer", (ENC + "conformer_encoder.ConformerEncoder",), "hooks", _BLOCKS,
           output=True, output_when="normalize_before"),
    Family("transformer", (ENC + "transformer_encoder.TransformerEncoder",), "hooks", _BLOCKS,
           output=True, output_when="normalize_before"),
    Family("branchformer", (ENC + "branchformer_encoder.BranchformerEncoder",), "hooks", _BLOCKS,
           output=True),
    Family("e_branchformer", (ENC + "e_branchformer_encoder.EBranchformerEncoder",), "hooks",
           _BLOCKS, output=True),
    Family("multiconv_conformer",
           (ENC + "multiconvformer_encoder.MultiConvConformerEncoder",), "hooks", _BLOCKS,
           output=True, output_when="normalize_before"),
    Family("contextual_block_conformer",
           (ENC + "contextual_block_conformer_encoder.ContextualBlockConformerEncoder",), "hooks",
           _STREAMING, output=True, output_when="normalize_before", one_utterance=True),
    Family("contextual_block_transformer",
           (ENC + "contextual_block_transformer_encoder.ContextualBlockTransformerEncoder",),
           "hooks", _STREAMING, output=True, output_when="normalize_before", one_utterance=True),
    Family("torchaudiohubert", (ENC + "hubert_encoder.TorchAudioHuBERTPretrainEncoder",), "hooks",
           (Hook(_W2V + "feature_extractor", "cnn"), Hook(_W2V + "encoder.feature_projection", "projection"),
            Hook(_W2V + "encoder.transformer.layers.*", "block")),
           timing=_W2V + "feature_extractor", output=True,
           output_when="not " + _W2V + "encoder.transformer.layer_norm_first", takes_wave=True),
    Family("rnn", (ENC + "rnn_encoder.RNNEncoder",), "rnn"),
    Family("vgg_rnn", (ENC + "vgg_rnn_encoder.VGGRNNEncoder",), "rnn"),
    Family("whisper", (ENC + "whisper_encoder.OpenAIWhisperEncoder",), "whisper",
           takes_wave=True),
)

_FAIRSEQ = ("needs fairseq, which does not install here (a source build pinning omegaconf<2.1 "
            "and hydra-core 1.0)")
REFUSED: Tuple[Refused, ...] = (
    Refused("wav2vec2", (ENC + "wav2vec2_encoder.FairSeqWav2Vec2Encoder",), _FAIRSEQ),
    Refused("hubert", (ENC + "hubert_encoder.FairseqHubertEncoder",), _FAIRSEQ),
    Refused("hubert_pretrain", (ENC + "hubert_encoder.FairseqHubertPretrainEncoder",), _FAIRSEQ),
    Refused("longformer", (ENC + "longformer_encoder.LongformerEncoder",),
            "needs the longformer package, which is not on PyPI"),
    Refused("transformer_multispkr", (ENC + "transformer_encoder_multispkr.TransformerEncoder",),
            "multi-speaker: each layer holds one sequence per speaker (B, speakers, T, D) and the "
            "shared blocks run once per speaker, so a layer is not one sequence to probe"),
    Refused("beats", (ENC + "beats_encoder.BeatsEncoder",),
            "its frames are 16x16 time-frequency patches, not time frames (and its length mask "
            "counts patches as if they were in time order)"),
    Refused("avhubert", (ENC + "avhubert_encoder.FairseqAVHubertEncoder",),
            "audio-visual (it needs video input), and " + _FAIRSEQ),
)

FRONTENDS: Tuple[Frontend, ...] = (
    Frontend("", (), "none"),
    Frontend("default", ("espnet2.asr.frontend.default.DefaultFrontend",), "stft"),
    Frontend("s3prl", ("espnet2.asr.frontend.s3prl.S3prlFrontend",), "s3prl"),
    # a brought openai-whisper model's log-mel, described as an STFT for its timing (the model
    # computes its own layers: espnet_probe.asr.whisper.WhisperASR.layer_outputs)
    Frontend("whisper_logmel", (OURS + "whisper.WhisperFrontend",), "stft"),
)


class UnsupportedFamily(NotImplementedError):
    """An encoder or frontend the map has no entry for, or refuses."""


def class_path(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__name__}"


def _index(entries) -> Dict[str, object]:
    return {c: e for e in entries for c in e.classes}


_BY_CLASS = _index(FAMILIES)
_REFUSED_BY_CLASS = _index(REFUSED)
_FRONTEND_BY_CLASS = _index(FRONTENDS)


def supported() -> str:
    return ", ".join(f.name for f in FAMILIES)


def supported_frontends() -> str:
    """ESPnet's frontend choices the map knows (ours, Whisper's log-mel, are not a choice)."""
    return "none, " + ", ".join(f.name for f in FRONTENDS if f.name and not f.classes[0].startswith(OURS))


def family_of(encoder) -> Family:
    """The map's entry for ``encoder``, or one line saying why not."""
    path = class_path(encoder)
    family = _BY_CLASS.get(path)
    if family is not None:
        return family
    refused = _REFUSED_BY_CLASS.get(path)
    if refused is not None:
        raise UnsupportedFamily(f"encoder {refused.name} ({path}) is not probed: {refused.reason}")
    raise UnsupportedFamily(f"cannot list the layers of encoder {path}: no entry in the layer map "
                            f"(espnet_probe/families.py); supported: {supported()}")


def frontend_of(frontend) -> Frontend:
    """The map's entry for a model's frontend (None: no frontend), or one line saying why not."""
    if frontend is None:
        return FRONTENDS[0]
    path = class_path(frontend)
    entry = _FRONTEND_BY_CLASS.get(path)
    if entry is None:
        raise UnsupportedFamily(f"frontend {path} is not supported: no entry in the layer map "
                                f"(espnet_probe/families.py); supported: {supported_frontends()}")
    return entry


def family_named(name: str) -> Optional[Family]:
    return next((f for f in FAMILIES if f.name == name), None)


def check_config(encoder: str, frontend: Optional[str]) -> None:
    """Refuse, by the names a training config gives (``encoder:``, ``frontend:``), a model the
    map cannot probe: before anything is built or run (bringing a model checks this)."""
    refused = next((r for r in REFUSED if r.name == encoder), None)
    if refused is not None:
        raise UnsupportedFamily(f"encoder {encoder} is not probed: {refused.reason}")
    if family_named(encoder) is None:
        raise UnsupportedFamily(f"encoder {encoder!r} has no entry in the layer map "
                                f"(espnet_probe/families.py); supported: {supported()}")
    if frontend and not any(f.name == frontend for f in FRONTENDS):
        raise UnsupportedFamily(f"frontend {frontend!r} is not supported: no entry in the layer map "
                                f"(espnet_probe/families.py); supported: {supported_frontends()}")


def waveform_encoders() -> Tuple[str, ...]:
    """Encoder choices that compute their own input from the waveform (no ESPnet frontend)."""
    return tuple(f.name for f in FAMILIES if f.takes_wave)
