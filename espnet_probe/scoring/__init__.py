"""Stage 11: every metric of every layer of an experiment, gathered into scores.csv (above
metrics/, the measures, and speaker/, the encoders)."""
