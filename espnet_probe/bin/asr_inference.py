"""Decode with ESPnet's ``asr_inference`` when the model uses espnet-probe's encoders.

Same options as ``python -m espnet2.bin.asr_inference``; for our CTC-only
models pass ``--ctc_weight 1.0 --lm_weight 0.0``.
"""

from __future__ import annotations

from espnet_probe.asr.register import register_encoders

register_encoders()  # see asr_train.py: spawned workers re-import this module


def main(argv=None):
    from espnet2.bin import asr_inference

    register_encoders()
    asr_inference.main(cmd=argv)


if __name__ == "__main__":
    main()
