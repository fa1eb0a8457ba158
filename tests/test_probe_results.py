"""Probe L1 tables: per-experiment RESULTS.md, the combined CSV/Markdown, and a missing decode."""

import csv

from espnet_probe.bin import probe_results
from summary_support import write_decode_summary


def write_summary(exp, condition, layers):
    write_decode_summary(exp / f"decode_{condition}", list(layers), layers,
                         {name: v + 0.5 for name, v in layers.items()})


def test_tables_hold_every_layer_and_condition(tmp_path):
    a, b = tmp_path / "probe_vgg_baseline", tmp_path / "probe_blstm_robust"
    write_summary(a, "test", {"input": 0.5, "cnn1": 0.6, "blstm1": 1.2})
    write_summary(a, "test_snr0", {"input": 0.4, "cnn1": 0.45, "blstm1": 0.9})
    write_summary(b, "test", {"input": 0.55, "blstm1": 1.4})
    assert probe_results.main(["--exps", str(a), str(b), "--out", str(tmp_path / "all")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "all.csv")))
    assert len(rows) == 3 + 3 + 2
    row = next(r for r in rows if r["probe"] == "vgg_baseline" and r["condition"] == "test_snr0"
               and r["layer"] == "blstm1")
    assert row["layer_index"] == "2" and float(row["l1_heard"]) == 0.9 and float(row["l1_clean"]) == 1.4
    table = (tmp_path / "all.md").read_text().splitlines()
    assert "| probe | condition | input | cnn1 | blstm1 |" in table
    assert "| blstm_robust | test | 0.550 |  | 1.400 |" in table  # no cnn1 in a pure BLSTM
    assert "| vgg_baseline | test_snr0 | 0.400 | 0.450 | 0.900 |" in (a / "RESULTS.md").read_text()


def test_missing_decoding_is_an_error(tmp_path, capsys):
    (tmp_path / "probe_x").mkdir()
    assert probe_results.main(["--exps", str(tmp_path / "probe_x"), "--out", str(tmp_path / "o")]) == 1
    assert "run probe decoding first" in capsys.readouterr().err
    # a summary from before layers had records in it: one line naming the file
    (tmp_path / "probe_x" / "decode_test").mkdir()
    (tmp_path / "probe_x" / "decode_test" / "summary.json").write_text('{"layers": {"input": {}}}')
    assert probe_results.main(["--exps", str(tmp_path / "probe_x"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"probe_results: error: {tmp_path}/probe_x/decode_test/summary.json: not a "
                          "decode summary") and err.count("\n") == 1
