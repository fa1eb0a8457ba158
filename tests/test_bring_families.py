"""The encoder families beyond the stock three, end to end: Whisper tiny.en fine-tuned as the egs2
Whisper recipes do (the model that recognises speech), a streaming (contextual-block) conformer
and a conformer on an s3prl frontend (a random tiny HuBERT upstream), all trained by ESPnet's
trainer, brought into ./run.sh and taken through stages 6-12 on real speech.

What is the same for every brought model runs in test_bring_recipe.py only, where two stock
models go through it: the random-encoder controls (here --probe_controls false, 30 % of this
run; every family's control, its re-initialised parameters and its layers, is checked in
test_encoder_families.py and test_whisper.py) and the noisy test condition (here clean only,
--test_snrs "": the noisy waveforms reach a brought model as the clean ones do).

Its own file (and stock recipe) so that it runs beside test_bring_recipe.py on the other
pytest-xdist worker, the two about as long; the recipe's stages 1-3 are the same fixture."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from espnet_probe.probe.summary import read_summary
from stock_models import S3PRL_KIND, STREAMING_KIND, WHISPER_KIND, stock_recipe
from test_bring_recipe import (BEAM, MAXLENRATIO, N_TEST, PROBE_ARGS, SNRS, _mean_mel_l1,  # noqa: F401
                               _run, probe_recipe, tiny_speaker_config)

pytestmark = pytest.mark.integration


def test_whisper_streaming_and_ssl_frontend_models_through_stages_6_to_12(probe_recipe,
                                                                          tmp_path_factory, tmp_path):
    recipe, common, env = probe_recipe
    kinds = (WHISPER_KIND, STREAMING_KIND, S3PRL_KIND)
    stock = stock_recipe(tmp_path_factory, kinds=kinds, name="families")
    spk_conf = tiny_speaker_config(tmp_path)
    exps = " ".join(str(stock.exp(kind)) for kind in kinds)
    assert common[-2:] == ["--test_snrs", SNRS]  # the fixture's noisy condition, not run here
    common = [*common[:-2], "--test_snrs", ""]
    proc = _run(["./run.sh", *common, "--asr_configs", "", "--beam_size", str(BEAM),
                 "--maxlenratio", MAXLENRATIO, "--stage", "3", "--stop_stage", "12",
                 "--asr_exps", exps, "--probe_train_set", "train", "--probe_controls", "false",
                 "--probe_args", PROBE_ARGS,
                 "--vocode_max_utts", str(N_TEST), "--speaker_config", str(spk_conf), "--n_boot", "100"],
                recipe, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    exp = recipe / "exp"

    table = (exp / "asr_results.md").read_text()
    # ESPnet's Whisper (encoder and decoder from tiny.en, Whisper's tokens, one fine-tuning
    # update) recognises the unseen speakers: its own beam search, scored after its text cleaner
    assert "attention beam 2 (ESPnet Speech2Text, ctc_weight 0), no LM, maxlenratio 0.1; WER " \
        "after ESPnet's whisper_en text cleaner" in table
    whisper = json.loads((exp / f"asr_{WHISPER_KIND}_brought" / "decode_test" / "result.json").read_text())
    assert whisper["wer"]["rate"] < 20, whisper["wer"]
    # its layer 0 is its encoder's own log-mel of the waveform: the probe must beat the best
    # constant predictor of the heard mel by far, which it cannot unless frames are aligned
    summary = read_summary(exp / f"probe_{WHISPER_KIND}_brought" / "decode_test")
    assert summary.layers[0].l1_heard < 0.6 * _mean_mel_l1(recipe, "test"), summary

    expected = {
        # Whisper's own log-mel and first convolution at 10 ms, the rest at 20 ms
        WHISPER_KIND: (["input", "conv1", "conv2", "block1", "block2", "block3", "block4",
                        "output"], 0.02),
        # the streaming blocks stitched back onto the utterance: one layer per block, at 32 ms
        STREAMING_KIND: (["input", "subsample", "block1", "block2", "output"], 0.032),
        # the upstream's layers at 20 ms, the frontend's weighted sum, the conformer at 40 ms
        S3PRL_KIND: (["upstream0", "upstream1", "upstream2", "weighted_sum", "subsample",
                      "block1", "block2", "output"], 0.04),
    }
    for name, (layers, period) in expected.items():
        record = yaml.safe_load((exp / f"asr_{name}_brought" / "experiment.yaml").read_text())
        assert record["input"] == "wave" and record["decoding"]["method"] == "joint_ctc_attention"
        result = json.loads((exp / f"asr_{name}_brought" / "decode_test" / "result.json").read_text())
        assert result["utterances"] == N_TEST and result["cer"]["ref"] > 0
        assert not (exp / f"asr_{name}_brought" / f"decode_test_snr{SNRS}").exists()
        summary = read_summary(exp / f"probe_{name}_brought" / "decode_test")
        assert summary.layer_names == layers and summary.utterances == N_TEST
        assert summary.layers[-1].layer.period == pytest.approx(period)
        assert not (exp / f"probe_{name}_random").exists()
        assert not (exp / f"asr_{name}_brought" / "speaker_id_random").exists()
        sid = (exp / f"asr_{name}_brought" / "speaker_id" / "results.csv").read_text().splitlines()
        assert [row.split(",")[0] for row in sid[1:]] == layers
    with open(exp / "report" / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["model"], r["training"], r["condition"], r["layer"], r["metric"]) for r in rows}
    for name, (layers, _) in expected.items():
        for layer in (layers[0], layers[-1]):
            for metric in ("eer_ge2e", "stoi", "pesq", "mel_l1"):
                assert (name, "brought", "clean", layer, metric) in got, (name, layer, metric)
        assert (name, "brought", "clean", "output", "wer") in got
