"""s3prl offline, for ESPnet's s3prl frontend (installed on import of espnet_probe; no torch, so
the light tools that import the package stay light).

s3prl 0.4.18 does not import beside torchaudio >= 2.9: it calls the removed
``torchaudio.set_audio_backend`` and imports the removed ``torchaudio.sox_effects`` at import
time, for upstreams we do not use. And tools/install.sh installs it without transformers (with
it installed, ESPnet imports it in every process, ~2 s each), which two of its upstreams import.
:func:`s3prl_import_hooks` gives torchaudio both names back and stands in for the two
HuggingFace-hosted upstreams, just before ``s3prl.hub`` runs; it costs nothing until then
(utils/offline.py: hook_import).
"""

from __future__ import annotations

import sys
import types

from espnet_probe.utils.offline import hook_import


def _sox_effects_removed(*args, **kwargs):
    import torchaudio

    raise RuntimeError(f"torchaudio {torchaudio.__version__} has no sox_effects (removed in "
                       "2.9); the s3prl upstream calling it needs torchaudio < 2.9")


def _set_audio_backend_is_gone(backend) -> None:
    """torchaudio >= 2.9 has one I/O path and no backend to choose: nothing to set."""


def _needs_transformers(name: str):
    def upstream(*args, **kwargs):
        raise ImportError(f"s3prl's {name} upstream needs transformers, which tools/install.sh "
                          "leaves out (ESPnet imports it at every start, ~2 s a process); "
                          "pip install transformers to use it")

    return upstream


def _exec_with_old_torchaudio_names(exec_module, module) -> None:
    import importlib.util

    import torchaudio

    if importlib.util.find_spec("transformers") is None:
        # the two HuggingFace-hosted upstreams import transformers; every other one works without
        for name in ("hf_hubert", "hf_wav2vec2"):
            stub = types.ModuleType(f"s3prl.upstream.{name}.hubconf", "Stand-in: needs transformers.")
            setattr(stub, f"{name}_custom", _needs_transformers(f"{name}_custom"))
            sys.modules[stub.__name__] = stub

    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = _set_audio_backend_is_gone
    try:
        import torchaudio.sox_effects  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torchaudio.sox_effects",
                                "Stand-in: removed in torchaudio 2.9; its functions raise.")
        stub.apply_effects_tensor = stub.apply_effects_file = _sox_effects_removed
        sys.modules[stub.__name__] = torchaudio.sox_effects = stub
    exec_module(module)


def s3prl_import_hooks() -> None:
    """Give torchaudio the two names s3prl needs (see the module docstring), and stand-ins for
    the two upstreams that need transformers when it is absent, just before ``s3prl.hub`` runs:
    it imports every upstream, the frontend imports it (``s3prl.nn``).  Not on ``s3prl``
    itself: ESPnet's trainer module imports that bare package early."""
    hook_import("s3prl.hub", _exec_with_old_torchaudio_names)
