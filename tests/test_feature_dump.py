"""Feature stage on real speech: outputs, targets of noisy copies, resume after a kill."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from espnet_probe.audio.feature_dump import (FeatureError, combine_feature_dirs, extract_job,
                                             merge_jobs)
from espnet_probe.audio.features import FbankConfig
from espnet_probe.data.model_inputs import ModelInputError, dump_waves
from espnet_probe.utils.kaldi_dir import KaldiDataDir, write_data_dir

CFG = FbankConfig.from_yaml(REPO / "conf" / "fbank.yaml")


def _real_dir(librispeech_dir: Path, out: Path, n: int) -> KaldiDataDir:
    flacs = sorted((librispeech_dir / "train-clean-5").glob("*/*/*.flac"))[:n]
    data = KaldiDataDir(wav_scp={f.stem: str(f) for f in flacs},
                        utt2spk={f.stem: f.stem.split("-")[0] for f in flacs},
                        text={f.stem: "X" for f in flacs})
    write_data_dir(out, data)
    return data


def _noisy_copy(clean: KaldiDataDir, out: Path, wav_dir: Path) -> None:
    rng = np.random.default_rng(1)
    wav_scp, utt2spk, utt2clean = {}, {}, {}
    wav_dir.mkdir(parents=True)
    for utt, path in clean.wav_scp.items():
        wav, sr = sf.read(path, dtype="float32")
        noisy = np.clip(wav + 0.05 * rng.standard_normal(wav.size), -1, 1)
        sf.write(wav_dir / f"{utt}-noise.wav", noisy, sr)
        wav_scp[f"{utt}-noise"] = str(wav_dir / f"{utt}-noise.wav")
        utt2spk[f"{utt}-noise"] = clean.utt2spk[utt]
        utt2clean[f"{utt}-noise"] = utt
    write_data_dir(out, KaldiDataDir(wav_scp=wav_scp, utt2spk=utt2spk,
                                     extra={"utt2clean": utt2clean}))


def _run_all(data_dir, out_dir, nj, clean_dir=None, stats=False):
    for job in range(1, nj + 1):
        extract_job(data_dir, out_dir, CFG, nj, job, clean_dir, stats)
    return merge_jobs(data_dir, out_dir, CFG, nj, stats)


def test_noisy_targets_are_clean_log_mel_and_stats_match(tmp_path, librispeech_dir):
    clean = _real_dir(librispeech_dir, tmp_path / "data" / "clean", 4)
    _noisy_copy(clean, tmp_path / "data" / "noisy", tmp_path / "wav")
    _run_all(tmp_path / "data" / "clean", tmp_path / "fb" / "clean", 2, stats=True)
    summary = _run_all(tmp_path / "data" / "noisy", tmp_path / "fb" / "noisy", 2,
                       clean_dir=tmp_path / "data" / "clean")
    assert summary["utterances"] == 4
    cf = kaldiio.load_scp(str(tmp_path / "fb" / "clean" / "feats.scp"))
    nf = kaldiio.load_scp(str(tmp_path / "fb" / "noisy" / "feats.scp"))
    nt = kaldiio.load_scp(str(tmp_path / "fb" / "noisy" / "target.scp"))
    all_feats = []
    for utt in clean.utt_ids:
        assert nf[f"{utt}-noise"].shape == cf[utt].shape
        np.testing.assert_array_equal(nt[f"{utt}-noise"], cf[utt][:, :80])
        assert np.abs(nf[f"{utt}-noise"][:, :80] - cf[utt][:, :80]).mean() > 0.1
        all_feats.append(cf[utt])
    shapes = (tmp_path / "fb" / "clean" / "feats_shape").read_text().split("\n")[0]
    assert shapes.endswith(",240")
    stats = np.load(tmp_path / "fb" / "clean" / "cmvn.npz")
    cat = np.concatenate(all_feats)
    assert int(stats["count"]) == cat.shape[0]
    np.testing.assert_allclose(stats["sum"], cat.sum(0, dtype=np.float64), rtol=1e-6, atol=1e-3)


def test_mismatched_noisy_and_clean_dirs_are_refused(tmp_path, librispeech_dir):
    clean = _real_dir(librispeech_dir, tmp_path / "data" / "clean", 2)
    _noisy_copy(clean, tmp_path / "data" / "noisy", tmp_path / "wav")
    other = _real_dir(librispeech_dir, tmp_path / "data" / "other", 1)
    with pytest.raises(Exception, match="mismatched data dirs"):
        extract_job(tmp_path / "data" / "noisy", tmp_path / "fb", CFG, 1, 1,
                    clean_dir=tmp_path / "data" / "other")
    assert other and not (tmp_path / "fb" / "data" / "feats.1.scp").exists()


def test_merge_refuses_missing_job(tmp_path, librispeech_dir):
    _real_dir(librispeech_dir, tmp_path / "data" / "x", 3)
    extract_job(tmp_path / "data" / "x", tmp_path / "fb", CFG, 2, 1)
    with pytest.raises(FeatureError, match="job 2 of 2 did not finish"):
        merge_jobs(tmp_path / "data" / "x", tmp_path / "fb", CFG, 2)
    with pytest.raises(FeatureError, match="job 1 of 2 did not finish with --stats"):
        merge_jobs(tmp_path / "data" / "x", tmp_path / "fb", CFG, 2, with_stats=True)


def test_a_job_is_skipped_only_once_stamped_with_its_options(tmp_path, librispeech_dir, capsys):
    _real_dir(librispeech_dir, tmp_path / "data" / "x", 2)
    data, out = tmp_path / "data" / "x", tmp_path / "fb"
    assert extract_job(data, out, CFG, 1, 1) == 2
    assert extract_job(data, out, CFG, 1, 1) == 0 and "already complete" in capsys.readouterr().err
    assert extract_job(data, out, CFG, 1, 1, with_stats=True) == 2  # statistics were not made
    assert (out / "data" / "stats.1.npz").is_file()
    # killed after its files appeared but before its stamp: the job is made again
    (out / "data" / ".job1.done").unlink()
    assert extract_job(data, out, CFG, 1, 1, with_stats=True) == 2


def test_combine_refuses_an_unfinished_source(tmp_path, librispeech_dir):
    _real_dir(librispeech_dir, tmp_path / "data" / "x", 1)
    extract_job(tmp_path / "data" / "x", tmp_path / "fb" / "x", CFG, 1, 1)
    with pytest.raises(FeatureError, match="features are incomplete"):
        combine_feature_dirs(tmp_path / "fb" / "both", [tmp_path / "fb" / "x"])
    merge_jobs(tmp_path / "data" / "x", tmp_path / "fb" / "x", CFG, 1)
    summary = combine_feature_dirs(tmp_path / "fb" / "both", [tmp_path / "fb" / "x"])
    assert summary["utterances"] == 1


def test_waves_follow_finished_features_and_their_audio(tmp_path, librispeech_dir):
    flacs = sorted((librispeech_dir / "train-clean-5").glob("*/*/*.flac"))[:2]
    (tmp_path / "audio").mkdir()
    wavs = {f.stem: shutil.copy(f, tmp_path / "audio") for f in flacs}
    data, out = tmp_path / "data" / "x", tmp_path / "fb" / "x"
    write_data_dir(data, KaldiDataDir(wav_scp={u: str(w) for u, w in wavs.items()},
                                      utt2spk={u: u.split("-")[0] for u in wavs}))
    extract_job(data, out, CFG, 1, 1)
    with pytest.raises(ModelInputError, match="features are incomplete"):
        dump_waves(data, out)
    merge_jobs(data, out, CFG, 1)
    assert dump_waves(data, out) == 2 and dump_waves(data, out) == 0
    first = sorted(wavs)[0]
    os.utime(wavs[first], ns=(time.time_ns(), time.time_ns()))  # audio rewritten in place
    assert dump_waves(data, out) == 2
    wave = kaldiio.load_scp(str(out / "wave.scp"))[first]
    np.testing.assert_array_equal(wave, sf.read(wavs[first], dtype="float32")[0])


@pytest.mark.integration
def test_stage_killed_half_way_resumes_to_identical_outputs(tmp_path, librispeech_dir, recipe_env):
    _real_dir(librispeech_dir, tmp_path / "data" / "x", 12)  # 3 jobs of 4: more jobs than cores
    cmd = [str(REPO / "local" / "make_features.sh"), "--nj", "3", "--sets", "x",
           "--config", str(REPO / "conf" / "fbank.yaml"), "--datadir", "data",
           "--featdir", "dump/fbank", "--stats_sets", "x"]

    # Reference: an uninterrupted run in another directory with the same data dir, in this
    # process (the stage's own job and merge functions, without its interpreter start-ups).
    ref = tmp_path / "ref"
    _run_all(tmp_path / "data" / "x", ref / "dump" / "fbank" / "x", 3, stats=True)

    proc = subprocess.Popen(cmd, cwd=tmp_path, env=recipe_env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = tmp_path / "dump" / "fbank" / "x" / "data"
    deadline = time.time() + 60
    while time.time() < deadline and not any(data.glob("*.ark.tmp")) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "dump" / "fbank" / "x" / ".done").exists(), "killed too late"

    subprocess.run(cmd, cwd=tmp_path, env=recipe_env, check=True, capture_output=True)

    def load(recipe_dir, name):  # scp paths are relative to the recipe dir, as in Kaldi
        cwd = os.getcwd()
        os.chdir(recipe_dir)
        try:
            return {k: v for k, v in kaldiio.load_scp(f"dump/fbank/x/{name}").items()}
        finally:
            os.chdir(cwd)

    for name in ("feats.scp", "target.scp"):
        got, want = load(tmp_path, name), load(ref, name)
        assert sorted(got) == sorted(want) and len(got) == 12
        for utt in want:
            np.testing.assert_array_equal(got[utt], want[utt])
    for name in ("feats_shape", "utt2num_frames"):
        assert ((tmp_path / "dump" / "fbank" / "x" / name).read_text()
                == (ref / "dump" / "fbank" / "x" / name).read_text())
    np.testing.assert_allclose(np.load(tmp_path / "dump/fbank/x/cmvn.npz")["sum"],
                               np.load(ref / "dump/fbank/x/cmvn.npz")["sum"], rtol=1e-6)
    assert not list(data.glob("*.tmp"))

    # A third run finds everything complete and does nothing.
    out = subprocess.run(cmd, cwd=tmp_path, env=recipe_env, capture_output=True, text=True)
    assert "already complete, skipped" in out.stderr
