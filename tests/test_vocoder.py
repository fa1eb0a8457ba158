"""Mel -> waveform vocoder: pseudo-inverse, batched fast Griffin-Lim, the vocode CLI."""

import json
import math
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

from espnet_probe.audio.features import FbankConfig, LogMelExtractor, mel_filterbank
from espnet_probe.audio.io import load_audio, write_wav
from espnet_probe.audio.vocoder import (MAGNITUDE_FLOOR, SampleCounts, VocodeError, VocoderConfig,
                                        _BatchFraming, griffin_lim, length_batches, mel_pinv,
                                        mel_shape, mel_to_magnitude, parallel_map,
                                        spectral_convergence, torch_threads, vocode)
from espnet_probe.bin import vocode as vocode_cli
from espnet_probe.utils.kaldi_dir import Segment

REPO = Path(__file__).resolve().parents[1]
# Short utterances of two women and two men (train-clean-5), 2.0-2.5 s each.
UTTS = ["118-47824-0026", "1737-146161-0007", "1867-154075-0014", "669-129074-0004"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # small transforms gain nothing from intra-op threads, which stall badly on a busy machine
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def cfg():
    return FbankConfig.from_yaml(REPO / "conf" / "fbank.yaml")


@pytest.fixture(scope="module")
def flac(librispeech_dir):
    """{utt: path} of the UTTS in the shared LibriSpeech subset."""
    out = {}
    for utt in UTTS:
        spk, chapter, _ = utt.split("-")
        out[utt] = librispeech_dir / "train-clean-5" / spk / chapter / f"{utt}.flac"
    return out


@pytest.fixture(scope="module")
def speech(flac):
    return {u: sf.read(p, dtype="float32")[0] for u, p in flac.items()}


@pytest.fixture(scope="module")
def log_mels(speech, cfg):
    ext = LogMelExtractor(cfg)
    return {u: ext(w)[1] for u, w in speech.items()}


def noise_wav(n, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


# --- pseudo-inverse --------------------------------------------------------------------------

def test_config_file_loads_and_bad_options_are_named(tmp_path):
    vc = VocoderConfig.from_yaml(REPO / "conf" / "vocoder.yaml")
    assert vc.n_iter == 32 and vc.momentum == 0.99
    bad = tmp_path / "v.yaml"
    bad.write_text("n_iters: 10\n")
    with pytest.raises(ValueError, match="n_iters"):
        VocoderConfig.from_yaml(bad)
    bad.write_text("init_phase: noise\n")
    with pytest.raises(ValueError, match=r"v\.yaml.*init_phase"):
        VocoderConfig.from_yaml(bad)


def test_pinv_is_cached_and_inverts_the_filterbank(cfg):
    assert mel_pinv(cfg) is mel_pinv(cfg)
    fb = torch.from_numpy(mel_filterbank(cfg))
    # the lowest filters are narrower than the 31 Hz bin spacing, so the filterbank has rank 79,
    # not 80: the pinv maps every mel that some magnitude produces back onto that same mel
    np.testing.assert_allclose((fb @ mel_pinv(cfg).T @ fb).numpy(), fb.numpy(), atol=1e-4)


def test_pinv_magnitude_reproduces_the_mel_of_a_known_magnitude(cfg, speech):
    ext = LogMelExtractor(cfg)
    fb = torch.from_numpy(mel_filterbank(cfg))
    for utt in UTTS[:2]:
        mag = ext.magnitude(torch.from_numpy(speech[utt]))
        mel = mag @ fb.T
        rec = mel_to_magnitude(ext.log_mel(speech[utt])[None], cfg)[0]
        assert rec.shape == mag.shape and float(rec.min()) >= MAGNITUDE_FLOOR
        # only the clamp at zero moves it off the exact mel (measured 0.2 % and 1.1 %)
        rel = torch.linalg.norm(rec @ fb.T - mel) / torch.linalg.norm(mel)
        assert rel < 0.03
        # bins outside fmin..fmax belong to no filter and come back silent
        hz = torch.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
        assert float(rec[:, hz > cfg.fmax].abs().max()) == 0.0


def test_mel_to_magnitude_checks_the_mel_dimension(cfg):
    with pytest.raises(ValueError, match="80"):
        mel_to_magnitude(torch.zeros(10, 40), cfg)


# --- transforms and batching -----------------------------------------------------------------

def test_batch_framing_matches_torch_stft_and_istft(cfg):
    n = 16000 + 77
    wav = torch.from_numpy(noise_wav(n))
    frames = 1 + n // cfg.hop_length
    framing = _BatchFraming(cfg, [frames], [n])
    window = torch.hann_window(cfg.win_length)
    ref = torch.stft(wav[None], cfg.n_fft, cfg.hop_length, cfg.win_length, window=window,
                     center=True, pad_mode="reflect", return_complex=True).transpose(1, 2)
    ours = framing.stft(wav[None])
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=2e-4)
    back = framing.istft(ours)
    ref_back = torch.istft(ref.transpose(1, 2), cfg.n_fft, cfg.hop_length, cfg.win_length,
                           window=window, center=True, length=n)
    np.testing.assert_allclose(back.numpy(), ref_back.numpy(), atol=1e-5)
    np.testing.assert_allclose(back[0].numpy(), wav.numpy(), atol=1e-5)  # perfect reconstruction


def test_output_length_exact_with_lengths_within_a_hop_without(cfg):
    ext = LogMelExtractor(cfg)
    for n in (8000, 8001, 8159, 12345):
        mag = ext.magnitude(torch.from_numpy(noise_wav(n)))
        out = griffin_lim(mag, cfg, n_iter=2, lengths=[n])
        assert out.shape == (n,)
        free = griffin_lim(mag, cfg, n_iter=2)
        assert free.shape == ((mag.shape[0] - 1) * cfg.hop_length,)
        assert 0 <= n - free.shape[0] < cfg.hop_length


def test_batched_equals_one_at_a_time(cfg):
    ext = LogMelExtractor(cfg)
    lengths = [12000, 4001, 8160, 3000]
    mags = [ext.magnitude(torch.from_numpy(noise_wav(n, seed=i))) for i, n in enumerate(lengths)]
    frames = [m.shape[0] for m in mags]
    batch = torch.zeros(len(mags), max(frames), mags[0].shape[1])
    for i, m in enumerate(mags):
        batch[i, :m.shape[0]] = m
    for init, momentum in (("random", 0.99), ("zero", 0.0)):
        together = griffin_lim(batch, cfg, n_iter=8, momentum=momentum, lengths=lengths,
                               init=init)
        assert together.shape == (4, max(lengths))
        for i, (m, n) in enumerate(zip(mags, lengths)):
            alone = griffin_lim(m, cfg, n_iter=8, momentum=momentum, lengths=[n], init=init)
            np.testing.assert_allclose(together[i, :n].numpy(), alone.numpy(), atol=1e-5)
            assert not together[i, n:].any()
        # without lengths, per-utterance frame counts do the same job
        free = griffin_lim(batch, cfg, n_iter=8, momentum=momentum, num_frames=frames, init=init)
        alone = griffin_lim(mags[1], cfg, n_iter=8, momentum=momentum, init=init)
        np.testing.assert_allclose(free[1, :alone.shape[0]].numpy(), alone.numpy(), atol=1e-5)


def test_padded_frames_do_not_leak(cfg):
    ext = LogMelExtractor(cfg)
    mags = [ext.magnitude(torch.from_numpy(noise_wav(n, seed=n))) for n in (16000, 6400)]
    batch = torch.zeros(2, mags[0].shape[0], mags[0].shape[1])
    batch[0], batch[1, :mags[1].shape[0]] = mags[0], mags[1]
    clean = griffin_lim(batch, cfg, n_iter=4, lengths=[16000, 6400])
    batch[1, mags[1].shape[0]:] = float("nan")  # garbage where the short one is padded
    batch[1, -1] = float("inf")
    dirty = griffin_lim(batch, cfg, n_iter=4, lengths=[16000, 6400])
    np.testing.assert_array_equal(clean.numpy(), dirty.numpy())


def test_initial_phase_is_seeded(cfg):
    mag = LogMelExtractor(cfg).magnitude(torch.from_numpy(noise_wav(8000)))
    a = griffin_lim(mag, cfg, n_iter=2, seed=3)
    np.testing.assert_array_equal(a.numpy(), griffin_lim(mag, cfg, n_iter=2, seed=3).numpy())
    assert not torch.allclose(a, griffin_lim(mag, cfg, n_iter=2, seed=4))
    zero = griffin_lim(mag, cfg, n_iter=2, init="zero", seed=1)
    np.testing.assert_array_equal(zero.numpy(),
                                  griffin_lim(mag, cfg, n_iter=2, init="zero", seed=2).numpy())


def test_inconsistent_lengths_and_bad_values_are_explained(cfg):
    mag = torch.ones(51, cfg.n_fft // 2 + 1)
    with pytest.raises(ValueError, match="frames"):
        griffin_lim(mag, cfg, lengths=[9000])  # 9000 samples give 57 frames, not 51
    with pytest.raises(ValueError, match="too short"):
        griffin_lim(torch.ones(1, cfg.n_fft // 2 + 1), cfg, n_iter=1)
    mels = [np.zeros((30, 80), np.float32), np.zeros((20, 80), np.float32)]
    mels[1][5, 3] = np.nan
    with pytest.raises(ValueError, match="'utt-b'.*NaN"):
        vocode(mels, None, cfg, VocoderConfig(n_iter=1), utt_ids=["utt-a", "utt-b"])
    with pytest.raises(ValueError, match="'utt-b'"):
        vocode([mels[0], mels[0]], [4700, 9000], cfg, VocoderConfig(n_iter=1),
               utt_ids=["utt-a", "utt-b"])


def test_length_batches_respect_limits():
    frames = [100, 700, 300, 300, 50, 699, 10]
    batches = length_batches(list(range(7)), frames, batch_frames=1400, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        assert len(b) <= 3 and len(b) * max(frames[i] for i in b) <= 1400
    assert batches[0] == [1, 5]  # longest first, two of ~700 frames fill the budget


def test_parallel_map_keeps_order_propagates_errors_and_restores_threads():
    before = torch.get_num_threads()
    assert list(parallel_map(lambda x: x * x, range(9), 3)) == [x * x for x in range(9)]

    def fail_on_4(x):
        if x == 4:
            raise VocodeError("item 4 is bad")
        return x
    with pytest.raises(VocodeError, match="item 4"):
        list(parallel_map(fail_on_4, range(9), 2))
    assert torch.get_num_threads() == before


# --- Griffin-Lim quality on real speech ------------------------------------------------------

def test_round_trip_stoi_on_real_speech(cfg, speech, log_mels):
    from pystoi import stoi
    lengths = [speech[u].size for u in UTTS]
    out = vocode([log_mels[u] for u in UTTS], lengths, cfg, VocoderConfig())
    rough = vocode([log_mels[u] for u in UTTS], lengths, cfg, VocoderConfig(n_iter=0))
    for utt, wav, base in zip(UTTS, out, rough):
        assert wav.dtype == np.float32 and wav.shape == speech[utt].shape
        score = stoi(speech[utt], wav, cfg.sample_rate, extended=False)
        # measured 0.979-0.985 at 32 iterations (seeds 0-2)
        assert score > 0.95, utt
        # the random initial phase alone already scores 0.86-0.91: GL must add to that
        assert score > stoi(speech[utt], base, cfg.sample_rate, extended=False) + 0.04, utt


def test_momentum_converges_faster(cfg, speech):
    ext = LogMelExtractor(cfg)
    for utt in UTTS[:2]:
        mag = ext.magnitude(torch.from_numpy(speech[utt]))
        n = speech[utt].size
        plain = griffin_lim(mag, cfg, n_iter=16, momentum=0.0, lengths=[n])
        fast = griffin_lim(mag, cfg, n_iter=16, momentum=0.99, lengths=[n])
        sc_plain = spectral_convergence(mag, plain, cfg)
        sc_fast = spectral_convergence(mag, fast, cfg)
        # measured 0.160 vs 0.101 and 0.149 vs 0.106
        assert sc_fast < 0.85 * sc_plain, (utt, sc_fast, sc_plain)


def test_peaks_are_scaled_down_only_when_too_loud(cfg, log_mels):
    mel = log_mels[UTTS[0]]
    vc = VocoderConfig(n_iter=4)
    quiet, gains = vocode([mel - math.log(4.0)], None, cfg, vc, return_gains=True)
    assert gains == [1.0] and np.abs(quiet[0]).max() < 0.99
    loud, gains = vocode([mel + math.log(8.0)], None, cfg, vc, return_gains=True)
    assert gains[0] < 1.0
    assert np.abs(loud[0]).max() == pytest.approx(0.99, abs=1e-6)


# --- kaldi scp in, wav dir out ---------------------------------------------------------------

def test_mel_shape_reads_headers_and_falls_back(tmp_path):
    mat = np.random.default_rng(0).standard_normal((37, 80)).astype(np.float32)
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/a.ark,{tmp_path}/a.scp") as w:
        w("plain", mat)
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/c.ark,{tmp_path}/c.scp",
                             compression_method=2) as w:
        w("compressed", mat)
    for scp in ("a.scp", "c.scp"):
        loc = (tmp_path / scp).read_text().split()[1]
        assert mel_shape(loc) == (37, 80)


def test_sample_counts_from_wav_scp_with_segments_and_from_a_table(tmp_path):
    sf.write(tmp_path / "rec.wav", noise_wav(32000), 16000, subtype="PCM_16")
    d = tmp_path / "seg"
    d.mkdir()
    (d / "wav.scp").write_text(f"rec {tmp_path / 'rec.wav'}\n")
    (d / "segments").write_text("a rec 0.0 0.75\nb rec 1.2 2.5\n")  # b runs past the end
    counts = SampleCounts(d / "wav.scp", 16000)
    assert counts("a") == 12000 and counts("b") == 32000 - 19200
    assert counts("b") == load_audio("b", str(tmp_path / "rec.wav"), Segment("rec", 1.2, 2.5)).size
    with pytest.raises(VocodeError, match="'c'"):
        counts("c")
    (tmp_path / "utt2num_samples").write_text("a 100\nb 1.5\n")
    with pytest.raises(VocodeError, match="'b'.*not a sample count"):
        SampleCounts(tmp_path / "utt2num_samples", 16000)


@pytest.fixture
def mel_set(tmp_path, flac, speech, log_mels):
    """A kaldi scp of three real log-mels plus a matching wav.scp and utt2num_samples."""
    utts = UTTS[:3]
    d = tmp_path / "probe"
    d.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{d}/mel.ark,{d}/mel.scp") as w:
        for u in utts:
            w(u, log_mels[u])
    wav_dir = tmp_path / "data"
    wav_dir.mkdir()
    (wav_dir / "wav.scp").write_text("".join(f"{u} {flac[u]}\n" for u in utts))
    (wav_dir / "utt2num_samples").write_text("".join(f"{u} {speech[u].size}\n" for u in utts))
    return d, wav_dir, utts


def run_cli(*args):
    return vocode_cli.main([str(a) for a in args])


def test_cli_jobs_merge_and_resume(tmp_path, mel_set, speech, cfg):
    d, data, utts = mel_set
    out = tmp_path / "voc"
    common = ["--mel_scp", d / "mel.scp", "--out_dir", out, "--fbank_config",
              REPO / "conf" / "fbank.yaml", "--config", REPO / "conf" / "vocoder.yaml",
              "--lengths_from", data / "wav.scp", "--nj", 2]
    assert run_cli(*common, "--merge") == 1  # nothing to merge yet
    assert run_cli(*common, "--job", 1) == 0
    assert run_cli(*common, "--job", 2) == 0
    assert run_cli(*common, "--merge") == 0
    scp = dict(line.split() for line in (out / "wav.scp").read_text().splitlines())
    assert sorted(scp) == utts
    for u in utts:
        wav, sr = sf.read(scp[u], dtype="float32")
        assert sr == cfg.sample_rate and wav.shape == speech[u].shape
    # a re-run with the same settings only lists what is there
    stamp = {u: Path(scp[u]).stat().st_mtime_ns for u in utts}
    Path(scp[utts[0]]).unlink()
    assert run_cli(*common, "--job", 1) == 0
    assert Path(scp[utts[0]]).exists()
    assert all(Path(scp[u]).stat().st_mtime_ns == stamp[u] for u in utts[1:])
    # utt2num_samples gives the same lengths as measuring the audio
    out2 = tmp_path / "voc2"
    assert run_cli("--mel_scp", d / "mel.scp", "--out_dir", out2, "--lengths_from",
                   data / "utt2num_samples", "--fbank_config", REPO / "conf" / "fbank.yaml",
                   "--config", REPO / "conf" / "vocoder.yaml") == 0
    for u in utts:
        assert sf.info(out2 / "wav" / f"{u}.wav").frames == speech[u].size
    settings = json.loads((out2 / "vocode_config.json").read_text())
    assert settings["vocoder"]["n_iter"] == 32 and settings["exact_lengths"]
    # concurrent workers write exactly what one worker writes
    out3 = tmp_path / "voc3"
    assert run_cli("--mel_scp", d / "mel.scp", "--out_dir", out3, "--lengths_from",
                   data / "utt2num_samples", "--fbank_config", REPO / "conf" / "fbank.yaml",
                   "--config", REPO / "conf" / "vocoder.yaml", "--num_threads", 2) == 0
    for u in utts:
        assert (out3 / "wav" / f"{u}.wav").read_bytes() == (out2 / "wav" / f"{u}.wav").read_bytes()


def test_cli_errors_name_the_utterance(tmp_path, mel_set, capsys, log_mels):
    d, data, utts = mel_set
    base = ["--mel_scp", d / "mel.scp", "--fbank_config", REPO / "conf" / "fbank.yaml",
            "--config", REPO / "conf" / "vocoder.yaml"]
    # a mel utterance missing from --lengths_from
    (data / "short.scp").write_text("".join(
        line + "\n" for line in (data / "wav.scp").read_text().splitlines()[1:]))
    assert run_cli(*base, "--out_dir", tmp_path / "o1", "--lengths_from", data / "short.scp") == 1
    assert f"'{utts[0]}' is not in" in capsys.readouterr().err
    # a length that cannot have produced the mel
    (data / "bad_counts").write_text(f"{utts[0]} 100\n{utts[1]} 1\n{utts[2]} 2\n")
    assert run_cli(*base, "--out_dir", tmp_path / "o2", "--lengths_from", data / "bad_counts") == 1
    assert "mismatched files" in capsys.readouterr().err
    # NaN in a stored mel
    bad = log_mels[utts[1]].copy()
    bad[3, 7] = np.nan
    with kaldiio.WriteHelper(f"ark,scp:{d}/nan.ark,{d}/nan.scp") as w:
        w(utts[0], log_mels[utts[0]])
        w(utts[1], bad)
    assert run_cli("--mel_scp", d / "nan.scp", "--out_dir", tmp_path / "o3", "--fbank_config",
                   REPO / "conf" / "fbank.yaml", "--config", REPO / "conf" / "vocoder.yaml") == 1
    err = capsys.readouterr().err
    assert f"'{utts[1]}'" in err and "NaN" in err
    # frames of the wrong dimension
    with kaldiio.WriteHelper(f"ark,scp:{d}/dim.ark,{d}/dim.scp") as w:
        w(utts[2], log_mels[utts[2]][:, :40])
    assert run_cli("--mel_scp", d / "dim.scp", "--out_dir", tmp_path / "o5", "--fbank_config",
                   REPO / "conf" / "fbank.yaml", "--config", REPO / "conf" / "vocoder.yaml") == 1
    assert f"'{utts[2]}' has 40-dim frames" in capsys.readouterr().err
    # a directory resumed with other settings is vocoded again, never mixed
    cfg2 = tmp_path / "v.yaml"
    cfg2.write_text("n_iter: 1\n")
    assert run_cli(*base[:-1], cfg2, "--out_dir", tmp_path / "o4") == 0
    first = {w.name: w.read_bytes() for w in (tmp_path / "o4" / "wav").glob("*.wav")}
    time.sleep(0.01)
    assert run_cli(*base, "--out_dir", tmp_path / "o4") == 0
    again = {w.name: w.read_bytes() for w in (tmp_path / "o4" / "wav").glob("*.wav")}
    assert first and sorted(again) == sorted(first)
    assert all(again[n] != first[n] for n in first)
    assert json.loads((tmp_path / "o4" / "vocode_config.json").read_text())["vocoder"]["n_iter"] != 1


def test_vocode_rejects_inconsistent_jobs_flags(tmp_path):
    with pytest.raises(SystemExit):
        run_cli("--mel_scp", tmp_path / "x.scp", "--out_dir", tmp_path, "--nj", 3)


def test_wavs_older_than_their_mels_are_vocoded_again(tmp_path, mel_set, log_mels):
    """A probe decoded again rewrites its mel ark: stage 9 redoes those wavs, keeps the rest."""
    d, data, utts = mel_set
    out = tmp_path / "voc"
    common = ["--mel_scp", d / "mel.scp", "--out_dir", out, "--fbank_config",
              REPO / "conf" / "fbank.yaml", "--config", REPO / "conf" / "vocoder.yaml",
              "--lengths_from", data / "wav.scp"]
    assert run_cli(*common) == 0
    before = {u: (out / "wav" / f"{u}.wav").read_bytes() for u in utts}
    assert run_cli(*common) == 0  # nothing changed: nothing rewritten
    assert all((out / "wav" / f"{u}.wav").read_bytes() == before[u] for u in utts)
    time.sleep(0.01)
    with kaldiio.WriteHelper(f"ark,scp:{d}/mel.ark,{d}/mel.scp") as w:  # a new decode
        for u in utts:
            w(u, log_mels[u] - 1.0)
    assert run_cli(*common) == 0
    assert all((out / "wav" / f"{u}.wav").read_bytes() != before[u] for u in utts)


def test_vocode_layers_takes_the_layers_and_their_order_from_the_decode_summary(tmp_path, capsys):
    from espnet_probe.bin import vocode_layers
    from summary_support import write_decode_summary

    data = tmp_path / "data" / "test"
    data.mkdir(parents=True)
    utts = {"s1-a": "s1", "s2-b": "s2"}
    for utt in utts:
        write_wav(data / f"{utt}.wav", noise_wav(3200))
    (data / "wav.scp").write_text("".join(f"{u} {data / u}.wav\n" for u in utts))
    (data / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utts.items()))
    decode = tmp_path / "probe_x" / "decode_test"
    layers = ["input", "deep", "blstm1"]  # encoder order, not alphabetical
    for name in layers + ["stray"]:  # a dir the summary does not list is no layer
        (decode / name).mkdir(parents=True)
        with kaldiio.WriteHelper(f"ark,scp:{decode / name}/mel.ark,{decode / name}/mel.scp") as w:
            for utt in utts:
                w(utt, np.full((21, 80), -5.0, dtype=np.float32))
    args = ["--decode_dirs", str(decode), "--data", str(tmp_path / "data"), "--fbank_config",
            str(REPO / "conf" / "fbank.yaml"), "--config", str(REPO / "conf" / "vocoder.yaml")]
    assert vocode_layers.main(args) == 1  # not decoded yet: no summary
    assert f"vocode_layers: error: {decode / 'summary.json'}: not found" in capsys.readouterr().err
    write_decode_summary(decode, layers)
    assert vocode_layers.main(args) == 0
    done = [line.split()[1][:-1] for line in capsys.readouterr().err.splitlines()
            if line.startswith("vocode_layers ") and "wavs in" not in line]
    assert done == [str(decode / name) for name in layers]
    for name in layers:
        assert sorted(line.split()[0] for line in (decode / name / "wav.scp").read_text().splitlines()) \
            == sorted(utts)
    assert not (decode / "stray" / "wav.scp").exists()
