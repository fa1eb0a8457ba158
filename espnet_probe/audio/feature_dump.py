"""Feature extraction of a data dir into kaldiio ark/scp, in ``nj`` resumable jobs.

Layout of ``dump/fbank/<set>/`` (ESPnet's dump/ convention):
  feats.scp      utt -> (T, 240) float32: log-mel | delta | acceleration (conf/fbank.yaml)
  target.scp     utt -> (T, 80) log-mel of the *clean* audio (for a noisy set: of utt2clean[utt])
  feats_shape    utt T,240 (ESPnet's shape-file format, used for batching)
  utt2num_frames, and the data dir's text / utt2spk / spk2utt copied beside them
  wave.scp       utt -> (N,) float32 samples, for models with their own frontend (only when
                 asked for: espnet_probe.data.model_inputs.dump_waves), wave_shape
  fbank.yaml     the settings used; .done (espnet_probe.utils.freshness.Stamp: the settings of
                 ``feature_settings`` and a summary) once the set is complete and merged
  data/          per-job arks and scps and their stamps (.job<N>.done); split/ and log/ are job
                 bookkeeping
Each job writes its ark and scp under temporary names, renames them when it finishes and then
stamps itself, so a killed job leaves nothing that looks complete, and a re-run of the set (the
set's stamp says ``resume``) only redoes the unstamped jobs.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import kaldiio
import numpy as np
from tqdm import tqdm

from espnet_probe.audio.fbank import FbankConfig
from espnet_probe.audio.io import load_utterance
from espnet_probe.utils.fileio import atomic_open, shard
from espnet_probe.utils.freshness import Stamp, fingerprint
from espnet_probe.utils.kaldi_dir import (DataDirError, KaldiDataDir, load_data_dir, read_table,
                                         write_table)


class FeatureError(RuntimeError):
    pass


def _job_paths(out_dir: Path, job: int) -> dict[str, Path]:
    d = out_dir / "data"
    return {"feats_ark": d / f"feats.{job}.ark", "feats_scp": d / f"feats.{job}.scp",
            "target_ark": d / f"target.{job}.ark", "target_scp": d / f"target.{job}.scp",
            "stats": d / f"stats.{job}.npz"}


def _job_stamp(out_dir: Path, job: int) -> Stamp:
    """A job's part of the set: the set's stamp decides whether finished jobs may be kept at all
    (same inputs and options), this one whether the job finished (with or without statistics)."""
    return Stamp(out_dir / "data", f"job{job}")


def load_pair(data_dir: Path, clean_dir: Path | None) -> tuple[KaldiDataDir, KaldiDataDir | None, dict]:
    """The data dir, its clean counterpart and the noisy -> clean utterance map."""
    data = load_data_dir(data_dir, require_text=False, extra_files=("utt2clean",))
    utt2clean = data.extra.get("utt2clean")
    if clean_dir is None:
        return data, None, {u: u for u in data.utt_ids} if utt2clean is None else utt2clean
    if utt2clean is None:
        raise DataDirError(f"{data_dir}: --clean_dir given but the dir has no utt2clean file")
    clean = load_data_dir(clean_dir, require_text=False)
    unknown = sorted(set(utt2clean.values()) - set(clean.utt2spk))
    if unknown:
        raise DataDirError(f"{data_dir / 'utt2clean'}: {len(unknown)} clean ids not in "
                           f"{clean_dir} (e.g. '{unknown[0]}'): mismatched data dirs")
    return data, clean, utt2clean


def extract_job(data_dir: str | Path, out_dir: str | Path, cfg: FbankConfig, nj: int, job: int,
                clean_dir: str | Path | None = None, with_stats: bool = False) -> int:
    """Compute features for the job-th shard. Returns the number of utterances written."""
    out_dir = Path(out_dir)
    paths = _job_paths(out_dir, job)
    stamp, settings = _job_stamp(out_dir, job), {"stats": with_stats}
    if stamp.begin(settings, owned=paths.values(), resumable=False) == "done":
        print(f"job {job}: already complete, skipped", file=sys.stderr)
        return 0
    data, clean, utt2clean = load_pair(Path(data_dir), Path(clean_dir) if clean_dir else None)
    utts = shard(data.utt_ids, nj, job)
    from espnet_probe.audio.features import LogMelExtractor  # torch: only the jobs need it

    extractor = LogMelExtractor(cfg)
    paths["feats_ark"].parent.mkdir(parents=True, exist_ok=True)
    tmp = {name: p.with_name(p.name + ".tmp") for name, p in paths.items()}
    count, total, total_sq = 0, np.zeros(cfg.feat_dim), np.zeros(cfg.feat_dim)
    # The scps are written against the final ark names; the arks get those names before the
    # scps appear, so a visible scp always points into a complete ark.
    with open(tmp["feats_ark"], "wb") as feats_ark, open(tmp["target_ark"], "wb") as target_ark, \
            open(tmp["feats_scp"], "w", encoding="utf-8") as feats_scp, \
            open(tmp["target_scp"], "w", encoding="utf-8") as target_scp:
        for utt in tqdm(utts, desc=f"fbank job {job}/{nj}", file=sys.stderr, mininterval=2):
            wav = load_utterance(data, utt, cfg.sample_rate)
            feats, log_mel = extractor(wav)
            if clean is not None:
                clean_wav = load_utterance(clean, utt2clean[utt], cfg.sample_rate)
                if clean_wav.shape != wav.shape:
                    raise FeatureError(
                        f"utterance '{utt}': {wav.size} samples but its clean version "
                        f"'{utt2clean[utt]}' has {clean_wav.size}: mismatched data dirs")
                _, log_mel = extractor(clean_wav)
            if not (np.isfinite(feats).all() and np.isfinite(log_mel).all()):
                raise FeatureError(f"utterance '{utt}': non-finite features")
            for ark, scp, name, mat in ((feats_ark, feats_scp, "feats_ark", feats),
                                        (target_ark, target_scp, "target_ark", log_mel)):
                ark.write(f"{utt} ".encode())
                offset = ark.tell()
                kaldiio.save_mat(ark, mat)
                scp.write(f"{utt} {paths[name]}:{offset}\n")
            if with_stats:
                count += feats.shape[0]
                total += feats.sum(0, dtype=np.float64)
                total_sq += np.square(feats, dtype=np.float64).sum(0)
    if with_stats:
        with open(tmp["stats"], "wb") as f:
            np.savez(f, count=np.array(count), sum=total, sum_square=total_sq)
    for name in ("feats_ark", "target_ark", "stats", "feats_scp", "target_scp"):
        if tmp[name].exists():
            tmp[name].replace(paths[name])
    stamp.finish(settings, utterances=len(utts))
    print(f"job {job}: {len(utts)} utterances", file=sys.stderr)
    return len(utts)


def feature_settings(cfg: FbankConfig, nj: int, data_dir: str | Path,
                     clean_dir: str | Path | None = None) -> dict:
    """What a set's features are made from: the output's stamp (make_features --begin)."""
    return {"fbank": cfg.as_dict(), "nj": nj, "data": fingerprint(data_dir),
            "clean": fingerprint(clean_dir) if clean_dir else None}


def merge_jobs(data_dir: str | Path, out_dir: str | Path, cfg: FbankConfig, nj: int,
               with_stats: bool = False, clean_dir: str | Path | None = None) -> dict:
    """Join the job scps into the set's files, check coverage, write stats and the stamp (the
    settings the set was begun with, else those of now)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    data = load_data_dir(data_dir, require_text=False)
    merged: dict[str, dict[str, str]] = {"feats": {}, "target": {}}
    for job in range(1, nj + 1):
        paths = _job_paths(out_dir, job)
        if _job_stamp(out_dir, job).state({"stats": with_stats}) != "done":
            raise FeatureError(f"{out_dir}: job {job} of {nj} did not finish"
                               f"{' with --stats' if with_stats else ''} "
                               f"(see {out_dir / 'log'}/fbank.{job}.log)")
        for kind in merged:
            for line in paths[f"{kind}_scp"].read_text(encoding="utf-8").splitlines():
                utt, loc = line.split(maxsplit=1)
                merged[kind][utt] = loc
    missing = sorted(set(data.utt2spk) - set(merged["feats"]))
    if missing:
        raise FeatureError(f"{out_dir}: {len(missing)} utterances of {data_dir} have no "
                           f"features (e.g. '{missing[0]}'); were the jobs run with --nj {nj}?")
    write_table(out_dir / "feats.scp", merged["feats"])
    write_table(out_dir / "target.scp", merged["target"])
    frames = {u: kaldiio.load_mat(loc).shape[0] for u, loc in merged["feats"].items()}
    write_table(out_dir / "utt2num_frames", {u: str(t) for u, t in frames.items()})
    write_table(out_dir / "feats_shape", {u: f"{t},{cfg.feat_dim}" for u, t in frames.items()})
    for name in ("text", "utt2spk", "spk2utt", "utt2clean"):
        if (data_dir / name).exists():
            shutil.copyfile(data_dir / name, out_dir / name)
    summary = {"utterances": len(frames), "frames": int(sum(frames.values())),
               "hours": sum(frames.values()) * cfg.hop_length / cfg.sample_rate / 3600}
    if with_stats:
        count, total, total_sq = 0, 0.0, 0.0
        for job in range(1, nj + 1):
            with np.load(_job_paths(out_dir, job)["stats"]) as st:
                count += int(st["count"])
                total = total + st["sum"]
                total_sq = total_sq + st["sum_square"]
        write_cmvn(out_dir / "cmvn.npz", count, total, total_sq)
    with atomic_open(out_dir / "fbank.yaml") as f:
        json.dump(cfg.as_dict(), f, indent=1)
    stamp = Stamp(out_dir)
    settings = stamp.begun_with()
    stamp.finish(feature_settings(cfg, nj, data_dir, clean_dir) if settings is None else settings,
                 **summary)
    return summary


def write_cmvn(path: Path, count: int, total: np.ndarray, total_sq: np.ndarray) -> None:
    """Global mean/variance statistics in the npz layout ESPnet's ``global_mvn`` reads."""
    with atomic_open(path, "wb") as f:
        np.savez(f, count=np.array(count), sum=np.asarray(total), sum_square=np.asarray(total_sq))


def combine_feature_dirs(out_dir: str | Path, sources: list[str | Path]) -> dict:
    """A set whose features are the union of other sets' (e.g. clean train + its noisy copy)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, str]] = {}
    count, total, total_sq = 0, 0.0, 0.0
    for src in map(Path, sources):
        if not Stamp(src).is_done():
            raise FeatureError(f"{src}: features are incomplete (not stamped done); "
                               "run that set first")
        for name in ("feats.scp", "target.scp", "feats_shape", "utt2num_frames", "text",
                     "utt2spk", "utt2clean"):
            table = tables.setdefault(name, {})
            if (src / name).exists():
                lines = read_table(src / name, allow_empty_value=name == "text")
            elif name == "utt2clean":  # a clean set: every utterance is its own target
                lines = {u: u for u in read_table(src / "utt2spk")}
            else:
                raise FeatureError(f"{src / name}: missing")
            clash = set(lines) & set(table)
            if clash:
                raise FeatureError(f"{src / name}: id '{sorted(clash)[0]}' is in two sources")
            table.update(lines)
        if (src / "cmvn.npz").exists():
            with np.load(src / "cmvn.npz") as st:
                count += int(st["count"])
                total = total + st["sum"]
                total_sq = total_sq + st["sum_square"]
    # waveforms (dump_waves) join the union when every source has them
    if all(Stamp(src, "wave").is_done() for src in sources):
        for name in ("wave.scp", "wave_shape"):
            tables[name] = {}
            for src in map(Path, sources):
                tables[name].update(read_table(src / name))
    for name, table in tables.items():
        write_table(out_dir / name, table)
    spk2utt: dict[str, list[str]] = {}
    for utt, spk in sorted(tables["utt2spk"].items()):
        spk2utt.setdefault(spk, []).append(utt)
    write_table(out_dir / "spk2utt", {s: " ".join(u) for s, u in spk2utt.items()})
    if count:
        write_cmvn(out_dir / "cmvn.npz", count, total, total_sq)
    frames = sum(int(v) for v in tables["utt2num_frames"].values())
    summary = {"utterances": len(tables["feats.scp"]), "frames": frames}
    Stamp(out_dir).finish({"sources": [str(src) for src in sources]}, **summary)
    return summary
