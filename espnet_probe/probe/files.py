"""The files a probe training leaves in its experiment dir, named where no torch is imported:
the report reads them (make_report's imports: 0.4 s without torch and ESPnet's trainer, 2.7 s
with them)."""

LAYER_BEST = "valid.layer_best.pth"  # each layer's probe from the epoch where it was best
TRAINING_RECORD = "probe_training.json"  # per layer: the chosen epoch, its valid L1, the curves
