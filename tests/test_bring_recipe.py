"""Bring your own ESPnet model, end to end: stock models trained by espnet2.bin.asr_train (asr.sh's
collect_stats + training), brought by ./run.sh --asr_exps on real speech: stage 6 decodes or
refuses each, the packed one goes on through stages 7-12, and the stock conformer's WER is
checked against espnet2.bin.asr_inference.
Whisper tiny.en fine-tuned as the egs2 Whisper recipes do runs in test_bring_families.py, on the
other pytest-xdist worker."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml

from conftest import REPO, egs_recipe
from espnet_probe.metrics.wer import score
from espnet_probe.probe.summary import read_summary
from espnet_probe.utils.checkpoint import load_checkpoint
from espnet_probe.utils.kaldi_dir import read_table
from stock_models import STOCK_KINDS, as_our_tool, pack_model, stock_recipe
from hostile import payload_checkpoint

pytestmark = pytest.mark.integration
PYTHON = sys.executable
# Two utterances a speaker and two test speakers: the fewest that give the speaker-ID probe a
# held-out utterance of each training speaker and the EER both target and non-target trials. The
# stages' plumbing is under test; every utterance costs each model a decoding, its probes'
# decodings, vocodings and PESQ / STOI / speaker scores, layer by layer.
# The shared subset's 20 speakers: 8 train, 2 dev, 2 test, and 8 spare, placed before dev and
# test in the split so that those are the speakers a 16-speaker train set left them. Every
# training-set pass (a probe's first epoch, the speaker-ID probes) costs a Whisper model a 30-s
# window per utterance.
SPLIT = "train=8,spare=8,dev=2,test=2"
TRAIN_SPEAKERS, TEST_SPEAKERS = 8, 2
UTTS_PER_SPK = 2
N_TEST = TEST_SPEAKERS * UTTS_PER_SPK
SNRS = "0"  # one noisy condition keeps the run short; every stage still sees clean + noisy
# The probes: small, 8 epochs of ~5 updates on the 16 training utterances. The input layer's
# probe must beat the constant predictor by far (checked below): after 4 epochs the rnn's did not
# (1.43 against 0.6 x 2.14); its epochs after the first take 0.2 s, Whisper's 0.7 s (the hidden
# states are kept from the first).
PROBE_ARGS = "--max_epoch 8 --batch_bins 200000 --probe_conf hidden_size=64"
BEAM = 2
# The stock hybrids train for 2 epochs and loop ("FPFPFP...") until the length limit: ESPnet's
# default (a token per encoder frame) made stage 6 ~8 s an utterance; a tenth of that is enough
# for the fine-tuned Whisper's transcripts (it is capped by Whisper's own limit anyway).
MAXLENRATIO = "0.1"


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def probe_recipe(tmp_path_factory, librispeech_dir):
    """A user's own Kaldi dirs of the shared subset (8 / 2 / 2 speakers) and no MUSAN, through
    the recipe's stages 1-3 (features and waveform dumps come later, with --asr_exps): babble
    from the training speakers, synthetic noise and music."""
    import os

    env = dict(os.environ, PATH=f"{REPO / 'tools' / 'venv' / 'bin'}:{os.environ['PATH']}")
    root = tmp_path_factory.mktemp("byo")
    recipe = egs_recipe(root)
    user = root / "users_data"
    # each speaker's UTTS_PER_SPK shortest utterances (3.7 s on average in the test set, against
    # 12.3 s at random): every stage's cost grows with the audio
    proc = _run(["local/data.sh", "--librispeech_dir", str(librispeech_dir), "--subsets", "train-clean-5",
                 "--split_by_speaker", SPLIT, "--max_utts_per_spk", str(UTTS_PER_SPK),
                 "--utt_choice", "shortest",
                 "--out", str(user)], recipe, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    common = ["--train_dir", str(user / "train"), "--valid_dir", str(user / "dev"),
              "--test_dirs", str(user / "test"), "--test_snrs", SNRS]
    proc = _run(["./run.sh", *common, "--stop_stage", "3"], recipe, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"babble voices of {TRAIN_SPEAKERS} speakers" in proc.stdout + proc.stderr
    return recipe, common, env


def _mean_mel_l1(recipe: Path, dump: str) -> float:
    """L1 of the best constant predictor per bin (the set's own per-bin median) of the heard mel."""
    cwd = Path.cwd()
    import os
    os.chdir(recipe)
    try:
        mels = [m[:, :80] for _, m in kaldiio.load_scp_sequential(f"dump/fbank/{dump}/feats.scp")]
    finally:
        os.chdir(cwd)
    allm = np.concatenate(mels)
    return float(np.abs(allm - np.median(allm, axis=0)).mean())




def tiny_speaker_config(where: Path) -> Path:
    """The recipe's ThinResNet config at a tiny size, one epoch: stage 10's plumbing."""
    spk = yaml.safe_load((REPO / "conf" / "speaker" / "resnet_small.yaml").read_text())
    spk["encoder_conf"].update(widths=[4, 8, 8, 8], blocks=[1, 1, 1, 1], descriptor_dim=16,
                               embed_dim=16)
    spk["max_epoch"] = 1
    path = where / "tiny_spk.yaml"
    path.write_text(yaml.safe_dump(spk))
    return path


def test_run_sh_probes_brought_stock_models_end_to_end(probe_recipe, tmp_path_factory, tmp_path):
    """The stock models train for 2 epochs (tests/stock_models.py): the hybrid ones' attention
    decoders already emit text, the CTC-only transformer still gives blanks only.  So stage 6
    decodes the two hybrid models (the rnn from its packed zip) and refuses the CTC-only one (the
    old silent WER 100 %); stages 7-12 probe the packed rnn, with its random-encoder control and
    the noisy condition, the stages every brought model takes alike.  The conformer's layers go
    through them in test_bring_families.py (two conformer families), and every family's layer
    map and control in test_encoder_families.py.  A model refused by stage 6 and probed all the
    same is the default run's (test_recipe.py)."""
    recipe, common, env = probe_recipe
    stock = stock_recipe(tmp_path_factory, kinds=STOCK_KINDS)
    packed = pack_model(stock.recipe_dir, stock.exp("rnn"), tmp_path / "rnn_packed.zip")
    exps = " ".join(map(str, [stock.exp("conformer_hybrid_bpe"), packed]))
    spk_conf = tiny_speaker_config(tmp_path)
    base = ["./run.sh", *common, "--asr_configs", "", "--beam_size", str(BEAM),
            "--maxlenratio", MAXLENRATIO]

    proc = _run(base + ["--stage", "3", "--stop_stage", "6", "--asr_exps", exps],
                recipe, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"dump_waves test: {N_TEST} utterances" in proc.stderr
    exp = recipe / "exp"
    names = ("conformer_hybrid_bpe", "rnn_packed")
    for name in names:
        record = yaml.safe_load((exp / f"asr_{name}_brought" / "experiment.yaml").read_text())
        assert record["input"] == "wave" and record["decoding"]["method"] == "joint_ctc_attention"
        for cond in ("test", f"test_snr{SNRS}"):
            result = json.loads((exp / f"asr_{name}_brought" / f"decode_{cond}" / "result.json").read_text())
            assert result["input"] == "wave" and result["utterances"] == N_TEST
            assert result["decoding"]["beam_size"] == BEAM and result["cer"]["ref"] > 0
            assert result["decoding"]["maxlenratio"] == float(MAXLENRATIO)
            hyps = read_table(exp / f"asr_{name}_brought" / f"decode_{cond}" / "text",
                              allow_empty_value=True)
            assert len(hyps) == N_TEST and any(h.strip() for h in hyps.values())
    table = (exp / "asr_results.md").read_text()
    assert "joint CTC/attention beam 2, ctc_weight 0.3" in table and "ctc_weight 0.5" in table

    # a brought checkpoint that would run code is refused when it is brought, in one line
    evil = tmp_path / "recipe_elsewhere" / "exp" / "asr_evil"
    shutil.copytree(stock.exp("rnn"), evil, symlinks=False)
    for ckpt in evil.glob("*.pth"):
        payload_checkpoint(ckpt, tmp_path / "PAYLOAD_RAN", load_checkpoint(ckpt))
    refused = _run(base + ["--stage", "6", "--stop_stage", "6", "--asr_exps", str(evil)], recipe, env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "bring_asr: error:" in refused.stderr and "refused" in refused.stderr
    assert not (tmp_path / "PAYLOAD_RAN").exists() and not (exp / "asr_evil_brought").exists()

    ctc_only = stock.exp("transformer_conv2d6")
    refused = _run(base + ["--stage", "6", "--stop_stage", "6", "--asr_exps", str(ctc_only)], recipe, env)
    assert refused.returncode == 1
    assert "hypotheses is empty" in refused.stderr and "asr_transformer_conv2d6_brought" in refused.stderr
    assert not list((exp / "asr_transformer_conv2d6_brought").glob("decode_*/result.json"))

    name = "rnn_packed"
    proc = _run(base + ["--stage", "7", "--stop_stage", "12", "--asr_exps", str(packed),
                        "--probe_train_set", "train",  # clean only: half the work of train_robust
                        "--probe_args", PROBE_ARGS,
                        "--vocode_max_utts", str(N_TEST), "--speaker_config", str(spk_conf), "--n_boot", "100"],
                recipe, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    constant = _mean_mel_l1(recipe, "test")
    assert yaml.safe_load((exp / "asr_rnn_packed_brought" / "experiment.yaml").read_text())["packed"]
    assert not (exp / "probe_conformer_hybrid_bpe_brought" / "decode_test").exists()
    summary = read_summary(exp / f"probe_{name}_brought" / "decode_test")
    assert summary.input == "wave" and summary.utterances == N_TEST
    # layer 0 holds the heard audio (the model's own log-mel): its probe must beat the best
    # constant predictor by far, which it cannot unless frames are aligned in time
    assert summary.layers[0].layer.name == "input"
    assert summary.layers[0].l1_heard < 0.6 * constant, (summary, constant)
    assert read_summary(exp / f"probe_{name}_random" / "decode_test").layer_names
    assert not (exp / f"probe_{name}_random" / f"decode_test_snr{SNRS}").exists()
    sid = (exp / f"asr_{name}_brought" / "speaker_id" / "results.csv").read_text().splitlines()
    assert sid[0].startswith("layer,layer_index,accuracy") and len(sid) >= 1 + 4
    with open(exp / "report" / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["model"], r["training"], r["condition"], r["layer"], r["metric"]) for r in rows}
    for metric in ("eer_ge2e", "stoi", "pesq", "mel_l1"):
        assert (name, "brought", "clean", "input", metric) in got
        assert (name, "brought", f"snr{SNRS}", "input", metric) in got
        assert (name, "random", "clean", "input", metric) in got
    assert (name, "brought", "clean", "input", "speaker_id_acc") in got
    assert (name, "brought", "clean", "output", "wer") in got
    assert (exp / "report" / "eer_ge2e.png").stat().st_size > 5000
    assert (f"babble from speech/from_training ({TRAIN_SPEAKERS} files: voices of {TRAIN_SPEAKERS} "
            "training speakers") in \
        (exp / "report" / "RESULTS.md").read_text()

    # Stage 6's WER of the stock hybrid model = espnet2.bin.asr_inference's on the same data,
    # beam, maxlenratio and ctc_weight (its own loader, its own decoding loop; run as our tools
    # start ESPnet, typeguard off: its checks only re-verify argument types, 6 CPU-s of import)
    brought = exp / "asr_conformer_hybrid_bpe_brought"
    record = yaml.safe_load((brought / "experiment.yaml").read_text())
    out = tmp_path / "espnet_inference"
    wav_scp = recipe / "data" / "test" / "wav.scp"
    proc = _run([PYTHON, *as_our_tool("espnet2.bin.asr_inference"), "--asr_train_config",
                 str(brought / "config.yaml"), "--asr_model_file", record["checkpoint"],
                 "--data_path_and_name_and_type", f"{wav_scp},speech,sound", "--output_dir",
                 str(out), "--beam_size", str(BEAM), "--maxlenratio", MAXLENRATIO,
                 "--ctc_weight", str(record["decoding"]["ctc_weight"]),
                 "--lm_weight", "0", "--penalty", "0", "--batch_size", "1", "--ngpu", "0"],
                recipe, dict(env, OMP_NUM_THREADS="1"))  # as our stage-6 job (1 thread)
    assert proc.returncode == 0, proc.stderr[-3000:]
    espnet_hyps = read_table(out / "1best_recog" / "text", allow_empty_value=True)
    refs = read_table(recipe / "data" / "test" / "text", allow_empty_value=True)
    ours = json.loads((brought / "decode_test" / "result.json").read_text())
    theirs = score(refs, espnet_hyps, "word")
    assert len(espnet_hyps) == N_TEST
    assert abs(ours["wer"]["rate"] - theirs.rate) <= 0.1, (ours["wer"], theirs.rate)
    ours_hyps = read_table(brought / "decode_test" / "text", allow_empty_value=True)
    assert sum(ours_hyps[u] == espnet_hyps[u] for u in refs) >= N_TEST - 1


def test_stage_6_refuses_features_given_to_a_waveform_model(probe_recipe, stock_asr_models, tmp_path):
    """The silent WER 100 % of old: a raw-waveform model decoded from 240-dim features."""
    recipe, _, env = probe_recipe
    proc = _run([PYTHON, "-m", "espnet_probe.bin.bring_asr", "--exp_root", str(tmp_path),
                 "--asr_exps", str(stock_asr_models.exp("transformer_conv2d6"))], recipe, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    work = Path(proc.stdout.split()[0])
    # a dump dir whose wave.scp holds the features instead (a mix-up of the kind)
    fake = tmp_path / "dump_test"
    shutil.copytree(recipe / "dump" / "fbank" / "test", fake, symlinks=True)
    (fake / "wave.scp").write_text((fake / "feats.scp").read_text())
    (fake / "wave_shape").write_text("".join(f"{u} {v.split(',')[0]}\n" for u, v in
                                              read_table(fake / "feats_shape").items()))
    proc = _run([PYTHON, "-m", "espnet_probe.bin.asr_decode", "--asr_exp", str(work),
                 "--feats_dir", str(fake), "--out", str(tmp_path / "decode")], recipe, env)
    assert proc.returncode == 1
    assert "asr_decode: error:" in proc.stderr and "expected (N>0,) samples" in proc.stderr
    assert not (tmp_path / "decode" / "result.json").exists()
