"""Make our encoders selectable as ``encoder: <name>`` in ESPnet's ASR task.

ESPnet builds ``--encoder`` choices from ``encoder_choices.classes`` when the
parser is made and looks the class up again in ``build_model``; so this must
run before ``ASRTask.get_parser()`` / ``ASRTask.main`` and before
``ASRTask.build_model_from_file``.  Safe to call any number of times.
"""

from __future__ import annotations

from typing import Dict, Type

from espnet_probe.asr.blstm import BLSTMEncoder
from espnet_probe.asr.vgg_blstm import VGGBLSTMEncoder

ENCODERS: Dict[str, Type] = {
    "vgg_blstm": VGGBLSTMEncoder,
    "blstm": BLSTMEncoder,
}


def register_encoders() -> Dict[str, Type]:
    """Add ENCODERS to ``espnet2.tasks.asr.encoder_choices``; return the choice table."""
    from espnet2.tasks.asr import encoder_choices

    for name, cls in ENCODERS.items():
        present = encoder_choices.classes.get(name)
        if present is not None and present is not cls:
            raise RuntimeError(
                f"ESPnet already has an encoder named {name!r} ({present.__module__}."
                f"{present.__qualname__}); refusing to replace it with {cls.__qualname__}"
            )
        encoder_choices.classes[name] = cls
    return encoder_choices.classes
