"""Offline hygiene: no import of ours reaches for the network (nltk data for g2p_en)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "asr_tiny"


def test_espnet_tools_of_ours_print_no_nltk_download_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "espnet_probe.bin.probe_train", "--list_layers",
         str(FIXTURE / "config.yaml"), str(FIXTURE / "valid.loss.best.pth")],
        capture_output=True, text=True, cwd=FIXTURE.parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nltk_data" not in proc.stderr + proc.stdout
    assert "blstm" in proc.stdout
