"""Layer-exposing CTC encoders for ESPnet's ASR task (see register.py)."""

from espnet_probe.asr.blstm import BLSTMEncoder, LayerOutput
from espnet_probe.asr.register import ENCODERS, register_encoders
from espnet_probe.asr.vgg_blstm import VGGBLSTMEncoder

__all__ = ["BLSTMEncoder", "VGGBLSTMEncoder", "LayerOutput", "ENCODERS", "register_encoders"]
