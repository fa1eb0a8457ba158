"""Start-up hygiene: no import of ours reaches for the network (nltk data for g2p_en), and our
tools skip ESPnet's import-time type instrumentation."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "asr_tiny"


@functools.cache
def list_layers_run() -> subprocess.CompletedProcess:
    """``probe_train --list_layers`` on the clean fixture, as a program, without the checkpoint
    opt-in (espnet_probe.utils.checkpoint.TRUST_ENV). One ESPnet start-up (~5 s) serves every
    test of its worker that checks this run (also test_checkpoint_safety's)."""
    from espnet_probe.utils.checkpoint import TRUST_ENV

    return subprocess.run(
        [sys.executable, "-m", "espnet_probe.bin.probe_train", "--list_layers",
         str(FIXTURE / "config.yaml"), str(FIXTURE / "valid.loss.best.pth")],
        capture_output=True, text=True, cwd=FIXTURE.parents[2],
        env={k: v for k, v in os.environ.items() if k != TRUST_ENV})


def test_espnet_tools_of_ours_print_no_nltk_download_errors():
    proc = list_layers_run()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nltk_data" not in proc.stderr + proc.stdout
    assert "blstm" in proc.stdout


def test_espnet_type_checks_are_skipped_by_running_tools_only():
    """A tool run as a program turns typeguard's checks of ESPnet off before ESPnet loads (their
    instrumentation is half of a decoding job's CPU); importing espnet_probe or a tool's module
    leaves them on, and PROBE_TYPECHECK=1 keeps them in a tool too."""
    run_tool = ("import runpy, sys\nsys.argv = ['count_batches', '--help']\ntry:\n"
                "    runpy.run_module('espnet_probe.bin.count_batches', run_name='__main__')\n"
                "except SystemExit:\n    pass\n")
    wrong_type = ("from espnet2.train.class_choices import ClassChoices\n"
                  "try:\n    ClassChoices('x', {}, default=5)\n    print('unchecked')\n"
                  "except Exception as e:\n    print(type(e).__name__)")
    for first, env, result in (("import espnet_probe\n", "0", "TypeCheckError"),
                               ("import espnet_probe.bin.count_batches\n", "0", "TypeCheckError"),
                               (run_tool, "0", "unchecked"),
                               (run_tool, "1", "TypeCheckError")):
        proc = subprocess.run([sys.executable, "-c", first + wrong_type], capture_output=True,
                              text=True, env={**os.environ, "PROBE_TYPECHECK": env})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split()[-1:] == [result], (first, env, proc.stdout)


def test_tools_turn_type_checks_off_before_anything_else_is_imported():
    """Modules ESPnet decorated before the switch keep their checks, so a tool runs it before any
    other import."""
    switch = "espnet_probe.utils.typecheck"
    for path in sorted((Path(__file__).resolve().parents[1] / "espnet_probe" / "bin").glob("*.py")):
        text = path.read_text()
        if switch not in text:
            continue
        body = [node for node in ast.parse(text).body
                if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
                and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
        guard = body[0]
        assert isinstance(guard, ast.If) and "__main__" in ast.unparse(guard.test), path.name
        assert [ast.unparse(node) for node in guard.body] == [f"import {switch}"], path.name


def test_load_yaml_reads_as_safe_load_and_builds_no_objects(tmp_path):
    import pytest
    import yaml

    from espnet_probe.utils.yaml_io import load_yaml

    text = ("token_list: [<blank>, ' the', \"\\xC3\\u0125\", 'yes', 'null']\nlr: 1.0e-3\n"
            "flag: yes\nnothing: null\nnested: {a: [1, 2.5, -3], b: on}\n")
    python_parser = yaml.load(text, Loader=yaml.SafeLoader)  # what yaml.safe_load is unpatched
    assert load_yaml(text) == python_parser
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with path.open() as f:
        assert load_yaml(f) == python_parser
    with pytest.raises(yaml.YAMLError):
        load_yaml("run: !!python/object/apply:os.system ['true']\n")


def test_a_tools_yaml_safe_load_is_libyamls_and_a_librarys_is_pyyamls():
    """ESPnet's build_model_from_file reads config.yaml with yaml.safe_load: in a tool (the bin
    package imported) that goes through libyaml; importing espnet_probe alone changes nothing."""
    code = ("import yaml\nsafe_load = yaml.safe_load\nimport espnet_probe\n"
            "print(yaml.safe_load is safe_load)\nimport espnet_probe.bin\n"
            "from espnet_probe.utils.yaml_io import load_yaml\nprint(yaml.safe_load is load_yaml)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True"]


def test_espnet_tasks_load_without_scipy_signal_and_jets_until_used():
    """ESPnet's preprocessor (scipy.signal) and its attention-plot module (JETS: scipy.stats,
    numba) stay unloaded (1.3 s per job); scipy.signal works on first use, and the plot module's
    isinstance test answers as the real class does, importing it then. The process starts as a
    tool does, typeguard off (on, its imports took 17.6 s instead of 4.8)."""
    code = ("import sys\nimport espnet_probe.utils.typecheck\nimport espnet_probe\nimport torch\n"
            "import espnet2.tasks.asr\n"
            "import espnet2.train.trainer\n"
            "from espnet2.main_funcs import calculate_all_attentions as plot\n"
            "print(any(m.startswith(('scipy.signal.', 'scipy.stats', 'espnet2.gan_tts')) "
            "for m in sys.modules))\n"
            "import scipy.signal\n"
            "print(scipy.signal.convolve([1.0, 2.0], [1.0, 1.0]).tolist())\n"
            "print(isinstance(torch.nn.Linear(1, 1), plot.AlignmentModule))\n"
            "from espnet2.gan_tts.jets.alignments import AlignmentModule\n"
            "print(isinstance(AlignmentModule(2, 2), plot.AlignmentModule))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "[1.0,", "3.0,", "2.0]", "False", "True"]
