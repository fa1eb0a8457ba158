"""Scoring: speaker-verification trials and error rates, speech quality, mel distances."""
