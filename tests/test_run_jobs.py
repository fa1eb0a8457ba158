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


def test_running_jobs_report_their_latest_log_line_on_the_console(tmp_path, capsys, monkeypatch):
    """A long job is never silent: every PROBE_HEARTBEAT seconds, its elapsed time and newest
    output line (a tqdm bar's latest state after its carriage returns) reach stderr."""
    monkeypatch.setenv("PROBE_HEARTBEAT", "0.3")
    script = "printf 'layer 1/2\\r'; sleep 0.5; printf 'layer 2/2\\033[A\\r'; sleep 0.8; echo done JOB"
    assert main(["JOB=1:2", str(tmp_path / "h.JOB.log"), script]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert any("h.1.log] job 1/2 running" in line and "layer 1/2" in line for line in lines)
    assert any("h.2.log] job 2/2 running" in line and "layer 2/2" in line for line in lines)
    assert all("#" not in line.split(": ", 1)[1] for line in lines)  # never the command header
    assert not any("\x1b" in line for line in lines)  # nor a terminal escape


def test_heartbeat_off_prints_nothing_while_jobs_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROBE_HEARTBEAT", "0")
    assert main([str(tmp_path / "q.log"), "sleep 0.4; echo quiet"]) == 0
    assert capsys.readouterr().err == ""
