"""Start-up hygiene: no import of ours reaches for the network (nltk data for g2p_en), and
ESPnet's import-time type instrumentation is skipped."""

from __future__ import annotations

import os
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


def test_espnet_type_checks_are_skipped_unless_asked_for():
    """espnet_probe swaps typeguard's decorator before ESPnet imports it (its instrumentation is
    half of a decoding job's CPU); PROBE_TYPECHECK=1 keeps the real one."""
    code = ("import espnet_probe, sys; assert 'typeguard' not in sys.modules; "
            "import espnet2.asr.ctc, typeguard; print(typeguard.typechecked.__module__)")
    for env, module in ((None, "espnet_probe.utils.typecheck"), ("1", "typeguard")):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PROBE_TYPECHECK": env or "0"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split() == [module]
