"""Per-layer scoring of probe experiments and the report (tables, plots)."""
