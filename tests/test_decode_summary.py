"""The layer record and the decode summary: one writer, one reader, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import kaldiio
import numpy as np
import pytest

from espnet_probe.layer_record import Layer
from espnet_probe.probe.summary import (DecodedLayer, DecodeSummary, DecodeSummaryError,
                                        decode_summaries, read_summary, write_summary)
from summary_support import write_decode_summary

INPUT = Layer("input", 0, 240, 1, 0.01, -0.005)
DEEP = Layer("blstm5", 5, 8, 8, 0.08, -0.005)


def test_layer_record_round_trips_through_json():
    for layer in (INPUT, DEEP):
        assert Layer.from_json(layer.name, json.loads(json.dumps(layer.to_json())), "x") == layer
    with pytest.raises(ValueError, match="x: layer 'a' lacks dim, period"):
        Layer.from_json("a", {"index": 0, "frame_rate": 1, "offset": 0.0}, "x")
    with pytest.raises(ValueError, match="non-numeric index"):
        Layer.from_json("a", {**INPUT.to_json(), "index": "0"}, "x")


def test_summary_written_and_read_back_with_its_files(tmp_path):
    d = tmp_path / "decode_test_snr0"
    summary = DecodeSummary(d, "test_snr0", 4, 400, "wave",
                            (DecodedLayer(INPUT, 0.5, 0.75), DecodedLayer(DEEP, 1.25, 1.5)))
    write_summary(d, summary)
    assert read_summary(d) == summary
    assert summary.layer_names == ["input", "blstm5"]
    assert summary.mel_scp("blstm5") == d / "blstm5" / "mel.scp"
    assert summary.wav_scp("input") == d / "input" / "wav.scp"
    # the fields summary.json always had stay where they were; each layer gains its record
    data = json.loads((d / "summary.json").read_text())
    assert list(data) == ["set", "utterances", "frames", "input", "layers"]
    assert data["layers"]["blstm5"] == {"l1_heard": 1.25, "l1_clean": 1.5, "index": 5, "dim": 8,
                                        "frame_rate": 8, "period": 0.08, "offset": -0.005}
    # no clean target: no l1_clean
    write_summary(d, DecodeSummary(d, "test", 4, 400, "feats", (DecodedLayer(INPUT, 0.5, None),)))
    assert "l1_clean" not in json.loads((d / "summary.json").read_text())["layers"]["input"]
    assert read_summary(d).layers[0].l1_clean is None


@pytest.mark.parametrize("text, message", [
    (None, "summary.json: not found (run probe decoding first)"),
    ("{", "summary.json: not a decode summary"),
    ("[]", "summary.json: not a decode summary"),
    ('{"layers": {"input": {}}}', "no set, utterances, frames, input"),
    ('{"set": "t", "utterances": 1, "frames": 1, "input": "mp3", "layers": {"a": {}}}', "input 'mp3'"),
    ('{"set": "t", "utterances": "1", "frames": 1, "input": "feats", "layers": {"a": {}}}',
     "utterances of the wrong type"),
    ('{"set": "t", "utterances": 1, "frames": 1, "input": "feats", "layers": {}}', "'layers' must map"),
    ('{"set": "t", "utterances": 1, "frames": 1, "input": "feats", "layers": {"a": {}}}',
     "layer 'a' has no numeric l1_heard"),
    # what probe decoding wrote before summaries held the layers' records
    ('{"set": "t", "utterances": 1, "frames": 1, "input": "feats", "layers": {"a": {"l1_heard": 1}}}',
     "layer 'a' lacks index, dim, frame_rate, period, offset; probe decoding writes it: decode again"),
])
def test_a_bad_summary_is_one_line_naming_the_file(tmp_path, text, message):
    d = tmp_path / "decode_t"
    d.mkdir()
    if text is not None:
        (d / "summary.json").write_text(text)
    with pytest.raises(DecodeSummaryError, match=re.escape(message)) as e:
        read_summary(d)
    assert str(e.value).startswith(str(d / "summary.json")) and "\n" not in str(e.value)


def test_layers_out_of_encoder_order_are_refused(tmp_path):
    d = tmp_path / "decode_t"
    write_summary(d, DecodeSummary(d, "t", 1, 1, "feats", (DecodedLayer(DEEP, 1.0, None),
                                                            DecodedLayer(INPUT, 1.0, None))))
    with pytest.raises(DecodeSummaryError, match=r"not in encoder order \(indices \[5, 0\]\)"):
        read_summary(d)


def test_decode_summaries_of_an_experiment(tmp_path):
    exp = tmp_path / "probe_x"
    with pytest.raises(DecodeSummaryError, match="no decode_<set>/summary.json"):
        decode_summaries(exp)
    write_decode_summary(exp / "decode_test_snr0", ["input", "deep"])
    write_decode_summary(exp / "decode_test", ["input"])
    (exp / "decode_half").mkdir()  # no summary: not (yet) decoded
    assert [s.set_name for s in decode_summaries(exp)] == ["test", "test_snr0"]


def test_summary_reader_needs_no_torch():
    code = ("import sys; import espnet_probe.probe.summary, espnet_probe.layer_record; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_decoding_writes_the_summary_it_returns_and_reads_it_on_a_rerun(tmp_path):
    from espnet_probe.probe.decode import HeardMel, decode_set

    feats = tmp_path / "dump" / "test"
    feats.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with kaldiio.WriteHelper(f"ark,scp:{feats}/feats.ark,{feats}/feats.scp") as w:
        for utt, t in (("u1", 12), ("u2", 7)):
            w(utt, rng.standard_normal((t, 240)).astype(np.float32))
    (feats / "feats_shape").write_text("u1 12,240\nu2 7,240\n")
    out = tmp_path / "probe_oracle" / "decode_test"
    summary = decode_set(HeardMel(), feats, out)
    assert read_summary(out) == summary
    assert (summary.set_name, summary.utterances, summary.frames, summary.input) == ("test", 2, 19, "feats")
    (original,) = summary.layers
    assert original.layer == Layer("original", 0, 80, 1, 0.01, -0.005) and original.l1_heard == 0.0
    assert decode_set(HeardMel(), feats, out) == summary  # done: read back, not decoded again


def test_score_jobs_follow_each_summarys_layers_and_records(tmp_path):
    from espnet_probe.scoring.layer_scores import LayerScoringError, probe_exp_jobs

    exp = tmp_path / "probe_x"
    with pytest.raises(LayerScoringError, match="no decode_<set>/summary.json"):
        probe_exp_jobs(exp)
    write_decode_summary(exp / "decode_test", ["input", "deep", "blstm1"])
    (exp / "decode_test" / "deep").mkdir()
    (exp / "decode_test" / "deep" / "wav.scp").write_text("")  # vocoded
    jobs = probe_exp_jobs(exp)
    assert [(j.set_name, j.layer, j.layer_index) for j in jobs] == [
        ("test", "input", 0), ("test", "deep", 1), ("test", "blstm1", 2)]
    assert [j.wav_scp for j in jobs] == [None, exp / "decode_test" / "deep" / "wav.scp", None]
    assert jobs[2].mel_scp == exp / "decode_test" / "blstm1" / "mel.scp"
    assert jobs[2].out_dir == exp / "score_test" / "blstm1"
    (exp / "decode_test" / "summary.json").write_text("{")
    with pytest.raises(LayerScoringError, match="decode_test/summary.json: not a decode summary"):
        probe_exp_jobs(exp)
