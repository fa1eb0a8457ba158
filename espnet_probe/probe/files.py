"""The files a probe training leaves in its experiment dir, named where no torch is imported:
the report reads them (make_report without torch and ESPnet's trainer: 3.7 s less a run)."""

LAYER_BEST = "valid.layer_best.pth"  # each layer's probe from the epoch where it was best
TRAINING_RECORD = "probe_training.json"  # per layer: the chosen epoch, its valid L1, the curves
