"""The report of a run: RESULTS.md tables, paired comparisons, findings, plots, the demo page."""
