"""Quiet imports: what ESPnet's modules do when imported that a CPU, offline run must not show.

* No network: ESPnet's text package imports g2p_en, which calls nltk.download() for its POS
  tagger and CMUdict the moment it is imported.  Offline that is a refused connection and eight
  ``[nltk_data] Error loading ...`` lines in every process and log.  This project tokenises into
  characters or BPE and never calls g2p, so those two downloads are skipped (g2p_en itself would
  still fail loudly if someone used it without the data), and g2p_en is loaded lazily, on its
  first use: importing it (and nltk) cost every process that imports ESPnet 0.5 s.
* No flash-attention notice: ESPnet's attention module prints "Failed to import Flash Attention,
  using ESPnet default: No module named 'flash_attn'" to stdout in every process that builds a
  model.  flash_attn is a CUDA package; on a machine without it the default is what runs, so that
  one line is dropped while the module is executed (any other output, or another import error,
  still shows).

* No signal-processing or TTS code the jobs do not run: ESPnet's preprocessor imports
  scipy.signal for room-impulse convolution, which no job here asks for, and its trainer's
  attention-plot module imports JETS's AlignmentModule (a TTS model, with scipy.stats and
  numba) for one ``isinstance`` test, and no training here plots attention (``num_att_plot:
  0``).  scipy.signal is loaded on first use (importlib's LazyLoader); in the attention-plot
  module, the imported name stands for a class whose ``isinstance`` test imports the real
  AlignmentModule and asks it, so the test answers as before.  Together 1.3 s of import
  in every process that loads ESPnet's tasks (measured, BENCHMARKS.md section 10).

The hooks cost nothing until their module is imported.  ``hook_import`` is the one way to
hook an import: asr/whisper_offline.py patches openai-whisper with it.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import sys

G2P_RESOURCES = {"averaged_perceptron_tagger_eng", "cmudict"}


def _exec_without_g2p_downloads(exec_module, module) -> None:
    import nltk

    download = nltk.download

    def download_except_g2p(info_or_id=None, *args, **kwargs):
        if info_or_id in G2P_RESOURCES:
            return False
        return download(info_or_id, *args, **kwargs)

    nltk.download = download_except_g2p
    exec_module(module)


def skip_g2p_downloads() -> None:
    hook_import("g2p_en", _exec_without_g2p_downloads, lazy=True)


ATTENTION_MODULE = "espnet.nets.pytorch_backend.transformer.attention"
FLASH_NOTICE = "Failed to import Flash Attention, using ESPnet default: No module named 'flash_attn'"


class _AroundImport(importlib.abc.MetaPathFinder):
    """Runs the first import of module ``name`` through ``around(exec_module, module)``; with
    ``lazy``, when the module is first used rather than imported (importlib's LazyLoader)."""

    def __init__(self, name: str, around, lazy: bool = False):
        self.name, self.around, self.lazy = name, around, lazy

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module
        spec.loader.exec_module = lambda module: self.around(exec_module, module)
        if self.lazy:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def hook_import(name: str, around, lazy: bool = False) -> None:
    """Run the first import of module ``name`` through ``around(exec_module, module)``; with
    ``lazy``, on the module's first attribute access instead (``import name`` costs nothing)."""
    if name not in sys.modules and not any(
            isinstance(f, _AroundImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AroundImport(name, around, lazy))


def _exec_without_notice(exec_module, module) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec_module(module)
    sys.stdout.write("".join(line for line in printed.getvalue().splitlines(True)
                             if line.rstrip("\n") != FLASH_NOTICE))


def quiet_flash_attention_notice() -> None:
    hook_import(ATTENTION_MODULE, _exec_without_notice)


ATTENTION_PLOT_MODULE = "espnet2.main_funcs.calculate_all_attentions"
JETS_ALIGNMENTS = "espnet2.gan_tts.jets.alignments"


class _RealOnInstanceCheck(type):
    """A stand-in class: ``isinstance(x, it)`` is ``isinstance(x, <the real class>)``."""

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, getattr(importlib.import_module(cls.real_module), cls.__name__))


def _exec_with_jets_on_demand(exec_module, module) -> None:
    if JETS_ALIGNMENTS in sys.modules:  # loaded already: nothing to save
        exec_module(module)
        return
    stand_in = type(sys)(JETS_ALIGNMENTS)
    stand_in.AlignmentModule = _RealOnInstanceCheck("AlignmentModule", (),
                                                    {"real_module": JETS_ALIGNMENTS})
    sys.modules[JETS_ALIGNMENTS] = stand_in
    try:
        exec_module(module)
    finally:
        del sys.modules[JETS_ALIGNMENTS]


def defer_unused_espnet_imports() -> None:
    hook_import("scipy.signal", lambda exec_module, module: exec_module(module), lazy=True)
    hook_import(ATTENTION_PLOT_MODULE, _exec_with_jets_on_demand)
