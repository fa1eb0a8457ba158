"""Frame-wise probes of ASR layers."""
