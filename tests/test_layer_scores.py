"""Scoring every layer and the report, on a probe experiment built from real LibriSpeech speech.

The stand-in experiment has two "layers": ``input`` reproduces the clean utterance exactly (its
mel is the clean mel, its audio the clean audio) and ``deep`` is the utterance drowned in noise at
-5 dB. So the right answers are known: ``input`` scores STOI 1, mel distances 0, the same EER as
the original audio; ``deep`` scores clearly worse on every metric.
"""

from __future__ import annotations

import csv

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from espnet_probe.audio.features import FbankConfig, LogMelExtractor
from espnet_probe.audio.io import write_wav
from espnet_probe.bin import make_report, make_trials, score_layers
from espnet_probe.report.results import REPORT_COLUMNS, conditions_in
from espnet_probe.scoring.layer_scores import SCORE_COLUMNS, split_condition
from tests.conftest import REPO
from tests.summary_support import write_decode_summary

pytestmark = pytest.mark.integration


def test_split_condition():
    assert split_condition("test") == ("test", "clean")
    assert split_condition("test_snr10") == ("test", "snr10")
    assert split_condition("test_clean_snr-5") == ("test_clean", "snr-5")
    rows = [{"condition": c} for c in ("snr0", "clean", "snr20", "snr10")]
    assert conditions_in(rows) == ["clean", "snr20", "snr10", "snr0"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, librispeech_dir):
    root = tmp_path_factory.mktemp("scores")
    rng = np.random.default_rng(0)
    speakers = sorted(p for p in (librispeech_dir / "train-clean-5").iterdir() if p.is_dir())[:3]
    extractor = LogMelExtractor(FbankConfig.from_yaml(REPO / "conf" / "fbank.yaml"))
    tables = {s: {"wav.scp": [], "utt2spk": [], "mel": {}, "noisy_mel": {}} for s in ("test",)}
    t = tables["test"]
    for spk in speakers:
        flacs = sorted(spk.rglob("*.flac"))[:3]
        for flac in flacs:
            utt = f"{spk.name}-{flac.stem}"
            # the first 3 s: enough for STOI, PESQ and GE2E partials; scoring time is per second
            wav, sr = sf.read(flac, dtype="float32", frames=3 * 16000)
            assert sr == 16000
            noise = rng.standard_normal(wav.size).astype(np.float32)
            noise *= np.sqrt(np.mean(wav ** 2) / np.mean(noise ** 2)) * 10 ** (5 / 20)
            noisy = wav + noise
            noisy *= 0.9 / np.max(np.abs(noisy))
            write_wav(root / "audio" / "clean" / f"{utt}.wav", wav)
            write_wav(root / "audio" / "noisy" / f"{utt}.wav", noisy)
            t["wav.scp"].append(f"{utt} {root / 'audio' / 'clean' / f'{utt}.wav'}")
            t["utt2spk"].append(f"{utt} {spk.name}")
            t["mel"][utt] = extractor.log_mel(wav).numpy()
            t["noisy_mel"][utt] = extractor.log_mel(noisy).numpy()
    utts = sorted(t["mel"])
    for set_name in ("test", "test_snr0"):
        d = root / "data" / set_name
        d.mkdir(parents=True)
        audio = "clean" if set_name == "test" else "noisy"
        (d / "wav.scp").write_text("".join(f"{u} {root / 'audio' / audio / f'{u}.wav'}\n"
                                           for u in utts))
        (d / "utt2spk").write_text("\n".join(sorted(t["utt2spk"])) + "\n")
        feats = root / "dump" / "fbank" / set_name
        feats.mkdir(parents=True)
        with kaldiio.WriteHelper(f"ark,scp:{feats / 'target.ark'},{feats / 'target.scp'}") as w:
            for u in utts:
                w(u, t["mel"][u])
    # the probe experiment: decode_<set>/<layer>/{mel.scp, wav.scp}
    exp = root / "exp" / "probe_toy_baseline"
    for set_name in ("test", "test_snr0"):
        dec = exp / f"decode_{set_name}"
        for layer, audio, mel in (("input", "clean", "mel"), ("deep", "noisy", "noisy_mel")):
            (dec / layer).mkdir(parents=True)
            with kaldiio.WriteHelper(f"ark,scp:{dec / layer / 'mel.ark'},"
                                     f"{dec / layer / 'mel.scp'}") as w:
                for u in utts:
                    w(u, t[mel][u])
            (dec / layer / "wav.scp").write_text(
                "".join(f"{u} {root / 'audio' / audio / f'{u}.wav'}\n" for u in utts))
        write_decode_summary(dec, ["input", "deep"])
        (dec / "vocoded_utts").write_text("\n".join(utts) + "\n")
    trials = root / "exp" / "trials" / "test" / "trials"
    assert make_trials.main(["--data_dir", str(root / "data" / "test"), "--utt_list",
                             str(exp / "decode_test" / "vocoded_utts"), "--n_per_class", "1000",
                             "--allow_fewer", "--out", str(trials)]) == 0
    return root, exp


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def value(rows, set_name, layer, metric):
    (r,) = [r for r in rows if r["set"] == set_name and r["layer"] == layer
            and r["metric"] == metric]
    return r


def test_scores_of_known_layers(experiment, capsys):
    root, exp = experiment
    common = ["--data", str(root / "data"), "--feats_root", str(root / "dump" / "fbank"),
              "--trials_dir", str(root / "exp" / "trials"), "--n_boot", "200"]
    assert score_layers.main(["--exp", str(exp), "--model", "toy", "--training", "baseline",
                              "--nj", "2"] + common) == 0
    rows = read_rows(exp / "scores.csv")
    assert tuple(rows[0]) == SCORE_COLUMNS
    assert {r["model"] for r in rows} == {"toy"} and {r["training"] for r in rows} == {"baseline"}
    clean_in = {m: float(value(rows, "test", "input", m)["value"])
                for m in ("stoi", "pesq", "mel_l1", "mcd", "eer_ge2e")}
    assert clean_in["stoi"] > 0.999 and clean_in["pesq"] > 4.5
    assert clean_in["mel_l1"] == 0 and clean_in["mcd"] == 0
    deep = {m: float(value(rows, "test", "deep", m)["value"]) for m in ("stoi", "pesq", "mel_l1")}
    assert deep["stoi"] < clean_in["stoi"] - 0.1 and deep["pesq"] < 2.0 and deep["mel_l1"] > 0.3
    # 3 LibriSpeech speakers x 3 utterances: 9 target pairs, all of them used
    eer = value(rows, "test", "input", "eer_ge2e")
    assert int(eer["n"]) == 18 and float(eer["ci_low"]) <= float(eer["value"]) <= float(eer["ci_high"])
    assert float(value(rows, "test", "deep", "eer_ge2e")["value"]) > clean_in["eer_ge2e"]
    assert value(rows, "test", "deep", "pesq_failed")["value"] == "0"
    # per-utterance files beside the summaries
    assert len((exp / "score_test" / "deep" / "quality" / "pesq").read_text().splitlines()) == 9
    assert (exp / "score_test" / "deep" / "speaker_ge2e" / "scores").is_file()
    first = (exp / "scores.csv").read_text()

    # a re-run reuses every embedding and quality job, and gives the same numbers
    capsys.readouterr()
    assert score_layers.main(["--exp", str(exp), "--model", "toy", "--training", "baseline"]
                             + common) == 0
    err = capsys.readouterr().err
    assert "speaker_ge2e: embedding" not in err and err.count("already complete, skipped") == 4
    assert (exp / "scores.csv").read_text() == first

    # the original audio of both conditions
    orig = root / "exp" / "score_original"
    assert score_layers.main(["--original", "--exp", str(orig), "--model", "original",
                              "--sets", "test", "test_snr0"] + common) == 0
    orows = read_rows(orig / "scores.csv")
    assert value(orows, "test", "audio", "eer_ge2e")["value"] == eer["value"]
    assert not any(r["metric"] == "mel_l1" for r in orows)  # nothing predicted to compare

    # the report
    out = root / "exp" / "report"
    assert make_report.main(["--out", str(out), "--scores", str(exp / "scores.csv"),
                             str(orig / "scores.csv"), "--oracle_root", str(exp),
                             "--mel_figure", f"toy:baseline:clean:{exp / 'decode_test'}",
                             f"toy:baseline:snr0:{exp / 'decode_test_snr0'}"]) == 0
    report = read_rows(out / "scores.csv")
    assert tuple(report[0]) == REPORT_COLUMNS
    assert {r["condition"] for r in report} == {"clean", "snr0"}
    md = (out / "RESULTS.md").read_text()
    assert "## Table 2: Speaker verification EER, GE2E" in md and "| baseline | snr0 |" in md
    assert "| original |" in md
    for png in ("eer_ge2e.png", "stoi.png", "pesq.png", "mel_toy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in md


def test_scoring_errors_name_the_problem(experiment, tmp_path, capsys):
    root, exp = experiment
    common = ["--data", str(root / "data"), "--feats_root", str(root / "dump" / "fbank"),
              "--n_boot", "0"]
    assert score_layers.main(["--exp", str(exp), "--trials_dir", str(tmp_path)] + common) == 1
    assert "trials file not found" in capsys.readouterr().err
    # a trial utterance without audio in one layer
    broken = tmp_path / "exp"
    dec = broken / "decode_test" / "input"
    dec.mkdir(parents=True)
    lines = (exp / "decode_test" / "input" / "wav.scp").read_text().splitlines()
    (dec / "wav.scp").write_text("\n".join(lines[1:]) + "\n")
    (dec / "mel.scp").write_text((exp / "decode_test" / "input" / "mel.scp").read_text())
    write_decode_summary(broken / "decode_test", ["input"])
    assert score_layers.main(["--exp", str(broken), "--trials_dir", str(root / "exp" / "trials")]
                             + common) == 1
    err = capsys.readouterr().err
    assert "trial utterances are missing" in err and lines[0].split()[0] in err


def write_scores_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SCORE_COLUMNS)
        w.writeheader()
        w.writerows(dict(zip(SCORE_COLUMNS, r)) for r in rows)


def test_report_human_error_from_listening_tests(tmp_path, monkeypatch, capsys):
    exp = tmp_path / "exp"
    write_scores_csv(exp / "probe_toy_robust" / "scores.csv", [
        ("toy", "robust", s, layer, i, "eer_ge2e", 5.0 + 10 * i, "", "", 40)
        for s in ("test", "test_snr0") for i, layer in enumerate(("input", "blstm1"))])
    listening = [("toy", "robust", "test", "input", 0, "human_error", 0.25, 0.14, 0.40, 40),
                 ("toy", "robust", "test", "blstm1", 1, "human_error", 0.45, 0.31, 0.60, 40),
                 ("original", "", "test", "audio", 0, "human_error", 0.05, 0.01, 0.17, 40)]
    write_scores_csv(exp / "listening" / "pilot" / "scores.csv", listening)
    chance_lines = []

    def keep_lines(fig, path):  # what the plot draws, before it is saved and closed
        chance_lines.extend(tuple(line.get_ydata()) for ax in fig.axes for line in ax.get_lines()
                            if line.get_label() == "chance")
        real_save(fig, path)

    from espnet_probe.report import plots
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", keep_lines)
    out = exp / "report"
    args = ["--out", str(out), "--scores", str(exp / "probe_toy_robust" / "scores.csv")]
    assert make_report.main(args) == 0  # the listening dir is found beside the report
    human = [r for r in read_rows(out / "scores.csv") if r["metric"] == "human_error"]
    assert len(human) == 3 and {r["condition"] for r in human} == {"clean"}
    assert {r["n"] for r in human} == {"40"}
    md = (out / "RESULTS.md").read_text()
    section = md.split("## Human error rate per layer (Fig. 2b)")[1].split("\n## ")[0]
    assert "| training | condition | input | blstm1 |" in section
    assert "| robust | clean | 0.25 (0.14-0.40) n=40 | 0.45 (0.31-0.60) n=40 |" in section
    assert "| original | 0.05 (0.01-0.17) n=40 |" in section
    assert (out / "human_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](human_error.png)" in md
    assert chance_lines == [(0.5, 0.5)]  # one condition x one model, dashed at chance

    # no listening test: one sentence on how to run it, no human plot, nothing else changes
    (exp / "listening" / "pilot" / "scores.csv").unlink()
    out2 = exp / "report_without"
    assert make_report.main(["--out", str(out2), "--scores",
                             str(exp / "probe_toy_robust" / "scores.csv")]) == 0
    md2 = (out2 / "RESULTS.md").read_text()
    assert "No listening-test results in" in md2 and "run the listening test" in md2
    assert not (out2 / "human_error.png").exists() and "human_error" not in md2.split("## Plots")[1]
    assert "## Table 2: Speaker verification EER, GE2E" in md2

    # two tests answering for the same cell: an error naming both files, not a silent pick
    write_scores_csv(exp / "listening" / "a" / "scores.csv", listening[:1])
    write_scores_csv(exp / "listening" / "b" / "scores.csv", listening[:1])
    capsys.readouterr()
    assert make_report.main(args) == 1
    err = capsys.readouterr().err
    assert str(exp / "listening" / "a" / "scores.csv") in err
    assert str(exp / "listening" / "b" / "scores.csv") in err
