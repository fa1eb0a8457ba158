import subprocess
import sys

from espnet_probe.bin.run_jobs import main, parse_args


def test_job_substitution_logs_and_accounting(tmp_path):
    log = tmp_path / "log" / "x.JOB.log"
    out = tmp_path / "out.JOB"
    assert main(["--mem", "4G", "JOB=1:3", str(log), "echo", "job JOB", ">", str(out)]) == 0
    for j in (1, 2, 3):
        assert (tmp_path / f"out.{j}").read_text() == f"job {j}\n"
        text = (tmp_path / "log" / f"x.{j}.log").read_text()
        assert text.startswith("# echo")
        assert "# Ended (code 0)" in text


def test_failed_jobs_fail_the_run_and_are_named(tmp_path, capsys):
    assert main(["JOB=1:3", str(tmp_path / "j.JOB.log"), "test JOB -ne 2"]) == 1
    err = capsys.readouterr().err
    assert "j.2.log" in err and "1 / 3 jobs failed" in err
    assert "# Ended (code 1)" in (tmp_path / "j.2.log").read_text()


def test_without_job_range_runs_once_and_respects_max_jobs():
    assert parse_args(["--max-jobs-run", "3", "l.log", "true"])[:4] == (3, "JOB", 1, 1)
    proc = subprocess.run([sys.executable, "-m", "espnet_probe.bin.run_jobs", "JOB=2:1", "l", "true"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "empty job range" in proc.stderr
