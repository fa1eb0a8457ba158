"""espnet-probe: per-layer resynthesis probes for ESPnet CTC encoders."""

__version__ = "0.1.0"
