"""ThinResNet + GhostVLAD speaker encoder: pooling and padding properties, the held-out split,
and ESPnet training -> embedding -> trial scoring on real speech."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from espnet_probe.audio.features import FbankConfig
from espnet_probe.audio.io import write_wav
from espnet_probe.bin.speaker_train import split_speakers
from espnet_probe.metrics.trials import make_trials
from espnet_probe.speaker.resnet import GhostVLAD, LogMelFrontend, ThinResNetGhostVLAD, repeat_pad
from espnet_probe.tasks.speaker import CropSpeech

from conftest import LIBRISPEECH, need

ROOT = Path(__file__).resolve().parents[1]
TINY = {"widths": [4, 8, 16, 32], "blocks": [1, 1, 1, 1], "stem_stride": 2,
        "descriptor_dim": 32, "clusters": 4, "ghost_clusters": 2, "embed_dim": 32}


def test_ghostvlad_output_is_unit_norm_and_sized_by_real_clusters_only():
    torch.manual_seed(0)
    x, lengths = torch.randn(3, 16, 20), torch.tensor([20, 13, 5])
    outs = {g: GhostVLAD(16, clusters=4, ghost_clusters=g)(x, lengths) for g in (0, 2, 5)}
    for g, out in outs.items():
        assert out.shape == (3, 4 * 16), g
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
        # intra-normalised: each cluster's residual sum has the same share of the length
        torch.testing.assert_close(out.reshape(3, 4, 16).norm(dim=-1), torch.full((3, 4), 0.5))


def test_frames_taken_by_a_ghost_cluster_do_not_change_the_output():
    pool = GhostVLAD(2, clusters=2, ghost_clusters=1)
    with torch.no_grad():  # feature 1 sends a frame to the ghost; feature 0 picks a real cluster
        pool.assign.weight.copy_(torch.tensor([[[5.0], [0.0]], [[-5.0], [0.0]], [[0.0], [100.0]]]))
        pool.assign.bias.copy_(torch.tensor([0.0, 0.0, -50.0]))
    speech = torch.tensor([[[1.0, -1.0, 0.5, -0.3], [0.0, 0.0, 0.0, 0.0]]])
    junk = torch.tensor([[[3.0, -2.0], [1.0, 1.0]]])
    alone = pool(speech, torch.tensor([4]))
    with_junk = pool(torch.cat([speech, junk], dim=2), torch.tensor([6]))
    torch.testing.assert_close(alone, with_junk, atol=1e-6, rtol=0)
    # without the ghost the same frames do move the output
    no_ghost = GhostVLAD(2, clusters=2, ghost_clusters=0)
    no_ghost.load_state_dict({"assign.weight": pool.assign.weight[:2],
                              "assign.bias": pool.assign.bias[:2],
                              "centroids": pool.centroids})
    assert (no_ghost(torch.cat([speech, junk], dim=2), torch.tensor([6]))
            - no_ghost(speech, torch.tensor([4]))).abs().max() > 1e-2


def _eval_model(seed: int = 0) -> ThinResNetGhostVLAD:
    torch.manual_seed(seed)
    model = ThinResNetGhostVLAD(FbankConfig(n_mels=64), **TINY)
    for m in model.modules():  # non-trivial running statistics, so padded zeros would show
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model.eval()


def test_padded_batch_gives_the_embeddings_of_each_utterance_alone():
    model = _eval_model()
    rng = np.random.default_rng(0)
    sizes = [16000, 11111, 7001, 4321]
    wavs = [torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.1) for n in sizes]
    # padding with noise, not zeros: whatever lies beyond a length must not matter
    batch = torch.from_numpy(rng.standard_normal((len(sizes), max(sizes))).astype(np.float32))
    for i, w in enumerate(wavs):
        batch[i, : w.numel()] = w
    with torch.no_grad():
        together = model.embed(batch, torch.tensor(sizes))
        alone = torch.cat([model.embed(w[None], torch.tensor([w.numel()])) for w in wavs])
    assert together.shape == (4, 32)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(4))
    assert (together[0] - together[1]).abs().max() > 1e-3  # not one constant vector


def test_frontend_removes_each_bands_mean_over_the_valid_frames():
    front = LogMelFrontend(FbankConfig(n_mels=64))
    wav = torch.randn(2, 8000) * torch.linspace(0.01, 1, 8000)
    feats, frames = front(wav, torch.tensor([8000, 4000]))
    assert feats.shape == (2, 51, 64) and frames.tolist() == [51, 26]
    torch.testing.assert_close(feats[0].mean(0), torch.zeros(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats[1, :26].mean(0), torch.zeros(64), atol=1e-4, rtol=0)
    assert feats[1, 26:].abs().max() == 0


def test_crops_have_the_window_length_and_short_audio_is_repeated():
    wav = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(repeat_pad(wav[:4], 10), [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    centre = CropSpeech(4, random=False)
    np.testing.assert_array_equal(centre("u", {"speech": wav})["speech"], [3, 4, 5, 6])
    np.random.seed(1)
    starts = {int(CropSpeech(4, random=True)("u", {"speech": wav})["speech"][0]) for _ in range(50)}
    assert starts == set(range(7))
    assert CropSpeech(16, random=True)("u", {"speech": wav})["speech"].size == 16


def test_speaker_task_options_are_the_models_keyword_arguments():
    from espnet_probe.tasks.speaker import SpeakerTask

    parse = SpeakerTask.get_parser().parse_args
    args = parse(["--num_spk", "2"])
    # ThinResNetGhostVLAD's and SpeakerEmbeddingModel's defaults, tuples as YAML lists
    assert args.encoder_conf == {"widths": [32, 64, 128, 256], "blocks": [3, 4, 6, 3],
                                 "stem_kernel": 3, "stem_stride": 1, "descriptor_dim": 512,
                                 "clusters": 8, "ghost_clusters": 2, "embed_dim": 512}
    assert args.loss_conf == {"margin": 0.2, "scale": 30.0}
    for option, key in (("--encoder_conf", "width"), ("--loss_conf", "margn"),
                        ("--frontend_conf", "nmels")):
        with pytest.raises(ValueError, match=rf"{option}: unknown option\(s\) \['{key}'\]"):
            SpeakerTask.build_model(parse(["--num_spk", "2", option, f"{key}=1"]))
    model = SpeakerTask.build_model(parse(["--num_spk", "2", "--loss_conf", "margin=0.1",
                                           "--encoder_conf", f"widths={TINY['widths']}"]))
    assert model.loss.margin == 0.1 and model.loss.scale == 30.0
    assert model.encoder.trunk.out_channels == 32 and model.encoder.embed_dim == 512


def test_held_out_split_is_seeded_per_speaker_and_interleaves_speakers():
    spk2utt = {f"s{s}": [f"s{s}_u{i:02d}" for i in range(n)] for s, n in enumerate([20, 10, 3, 1])}
    train, valid = split_speakers(spk2utt, 0.1, seed=3)
    assert (train, valid) == split_speakers(spk2utt, 0.1, seed=3)
    assert set(train).isdisjoint(valid) and len(train) + len(valid) == 34
    held = {u.split("_")[0] for u in valid}
    assert [sum(u.startswith(f"s{s}_") for u in valid) for s in range(4)] == [2, 1, 1, 0]
    assert held == {"s0", "s1", "s2"}  # a speaker with one utterance keeps it for training
    assert {u.split("_")[0] for u in train[:4]} == {"s0", "s1", "s2", "s3"}  # every batch mixes
    assert split_speakers(spk2utt, 0.1, seed=4) != (train, valid)


def _kaldi_dir(path: Path, flacs: list[Path]) -> Path:
    path.mkdir(parents=True)
    rows = sorted((f.stem, f) for f in flacs)
    (path / "wav.scp").write_text("".join(f"{u} {f}\n" for u, f in rows))
    (path / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u, _ in rows))
    return path


def _train_losses(exp: Path) -> list[float]:
    from espnet2.train.reporter import Reporter

    reporter = Reporter()
    reporter.load_state_dict(torch.load(exp / "checkpoint.pth", weights_only=False)["reporter"])
    return [reporter.get_value("train", "loss", e) for e in range(1, reporter.get_epoch() + 1)]


@pytest.mark.integration
def test_espnet_training_then_embedding_and_scoring(tmp_path):
    from espnet_probe.bin import speaker_train
    from espnet_probe.speaker.embed import embed_entries, score_speaker_resnet

    root = need(LIBRISPEECH / "train-clean-5")
    speakers = sorted(p for p in root.iterdir() if p.is_dir())
    train_dir = _kaldi_dir(tmp_path / "train",
                           [f for s in speakers[:4] for f in sorted(s.rglob("*.flac"))[:6]])
    test_flacs = [f for s in speakers[4:6] for f in sorted(s.rglob("*.flac"))[:3]]

    exp = tmp_path / "exp"
    tiny = [f"--encoder_conf={k}={v}".replace(" ", "") for k, v in TINY.items()]
    argv = ["--config", str(ROOT / "conf/speaker/resnet_small.yaml"), "--ngpu", "0",
            "--train_data_dir", str(train_dir), "--output_dir", str(exp), *tiny,
            "--crop_seconds", "1.0", "--batch_size", "5", "--optim_conf", "lr=0.005"]
    assert speaker_train.main(argv + ["--max_epoch", "3"]) == 0
    split = json.loads((exp / "data" / "split.json").read_text())
    assert (split["speakers"], split["train_utts"], split["valid_utts"]) == (4, 20, 4)
    assert len((exp / "spk2id").read_text().splitlines()) == 4
    losses = _train_losses(exp)
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    # --resume continues the run: epoch 4 only, the earlier epochs' record kept
    assert speaker_train.main(argv + ["--max_epoch", "4", "--resume", "true"]) == 0
    resumed = _train_losses(exp)
    assert len(resumed) == 4 and resumed[:3] == losses

    # embedding: real utterances of unseen speakers, plus digital silence and a 0.2 s clip
    extra = tmp_path / "extra"
    write_wav(extra / "silent.wav", np.zeros(16000, np.float32))
    write_wav(extra / "short.wav", sf.read(test_flacs[0], dtype="float32")[0][8000:11200])
    entries = [(f.stem, str(f)) for f in test_flacs] + [
        ("x-silent", str(extra / "silent.wav")), ("x-short", str(extra / "short.wav"))]
    utts, emb, status = embed_entries(entries, exp, nj=1)
    assert utts == [u for u, _ in entries] and emb.shape == (8, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert status == ["ok"] * 6 + ["silent", "short"]

    scp = tmp_path / "test_wav.scp"
    scp.write_text("".join(f"{u} {e}\n" for u, e in sorted(entries)))
    trials = make_trials({f.stem: f.stem.split("-")[0] for f in test_flacs}, 6, seed=0)
    out = tmp_path / "score"
    res = score_speaker_resnet(scp, trials, out, exp, nj=1, n_boot=20)
    saved = json.loads((out / "result.json").read_text())
    assert saved["encoder"].startswith("ThinResNet-10 (widths 4-8-16-32") and "GhostVLAD" in saved["encoder"]
    assert 0 <= saved["eer"] <= 100 and saved["n_target"] == saved["n_nontarget"] == 6
    assert saved["eer"] == res["eer"]
    assert len((out / "scores").read_text().splitlines()) == 12
    with np.load(out / "embeddings.npz") as z:
        assert sorted(z["utts"]) == trials.utterances() and str(z["digest"])
    mtime = (out / "embeddings.npz").stat().st_mtime_ns
    score_speaker_resnet(scp, trials, out, exp, nj=1, n_boot=20)
    assert (out / "embeddings.npz").stat().st_mtime_ns == mtime  # cached, not re-embedded
