"""Bring an ESPnet2 ASR model a user already has: an egs2 exp dir or a packed archive.

``bring(source, exp_dir)`` makes ``exp_dir`` an experiment of this project like the ones it
trains itself: ``config.yaml`` (the model's training config with every relative path resolved,
so ESPnet's loaders work from any directory), ``experiment.yaml`` (what the experiment is:
where the model came from, which checkpoint, what input it takes, how it decodes) and, for an
archive, ``packed/`` (its unpacked contents).  Nothing of the user's is modified.

Decisions (as ESPnet's own tools do it, so a model behaves here as it did there):
* Checkpoint: ``--asr_model_file`` if given, else the first of valid.acc.ave.pth,
  valid.acc.best.pth, valid.loss.ave.pth, valid.loss.best.pth (asr.sh's inference default is
  valid.acc.ave.pth).  Symlinks (valid.acc.ave.pth -> valid.acc.ave_<N>best.pth) are followed.
* Relative paths in config.yaml (bpemodel, token_list when a file, normalize_conf.stats_file,
  frontend_conf / preencoder_conf paths) are relative to the recipe dir (egs2/<corpus>/asr1),
  by default the exp dir's grandparent (``<recipe>/exp/<name>``); an archive's are relative to
  its own root (as espnet_model_zoo unpacks it).  A path that resolves to nothing is an error
  naming the key, the path and where it was looked for.
* Packed archives: ``espnet2.bin.pack asr`` zips (or tars) with ``meta.yaml``; unpacked member by
  member, refusing absolute names and ``..`` (no writes outside ``packed/``).
* The checkpoint is opened once here with tensors only (espnet_probe.utils.checkpoint): a file
  that would run code when unpickled is refused before it becomes an experiment.
* Decoding: hybrid CTC/attention models (a decoder and ctc_weight < 1) decode with ESPnet's
  ``Speech2Text`` joint beam search at the model's own ctc_weight; CTC-only models greedily.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Optional

import yaml

from espnet_probe.data.model_inputs import input_kind
from espnet_probe.experiments import EXPERIMENT_FILE, read_experiment
from espnet_probe.families import UnsupportedFamily, check_config
from espnet_probe.utils.fileio import atomic_dir, atomic_open
from espnet_probe.utils.yaml_io import load_yaml

CHECKPOINT_ORDER = ("valid.acc.ave.pth", "valid.acc.best.pth", "valid.loss.ave.pth",
                    "valid.loss.best.pth")
# config keys that hold file paths, as (section, key); section None = top level, "a.b" nested
# (an s3prl frontend's upstream checkpoint sits in frontend_conf.frontend_conf.path_or_url)
PATH_KEYS = (
    (None, "bpemodel"), (None, "token_list"), ("normalize_conf", "stats_file"),
    ("frontend_conf", "path_or_url"), ("frontend_conf.frontend_conf", "path_or_url"),
    ("preencoder_conf", "path"),
)
# values of those keys that name a built-in rather than a file: ESPnet's Whisper tokenizers
BUILT_IN_VALUES = {"whisper_en", "whisper_multilingual"}


class BringError(ValueError):
    """A model that cannot be brought as given; the message says what and where."""


def best_checkpoint(exp_dir: str | Path, model_file: Optional[str | Path] = None) -> Path:
    """The checkpoint of an experiment: its record's, the given one, or ESPnet's order."""
    exp_dir = Path(exp_dir)
    record = read_experiment(exp_dir)
    if model_file is None and record is not None and record.get("checkpoint"):
        model_file = record["checkpoint"]
    if model_file is not None:
        path = Path(model_file)
        if not path.is_absolute() and not path.exists():
            path = exp_dir / path
        if not path.is_file():
            raise FileNotFoundError(f"{exp_dir}: checkpoint {model_file} not found")
        return path
    for name in CHECKPOINT_ORDER:
        if (exp_dir / name).is_file():
            return exp_dir / name
    found = sorted(p.name for p in exp_dir.glob("*.pth")) if exp_dir.is_dir() else []
    raise FileNotFoundError(
        f"{exp_dir}: none of {', '.join(CHECKPOINT_ORDER)}"
        + (f" (it has {', '.join(found)}: give one with --asr_model_file)" if found
           else "; has training finished?"))


def _copied_section(conf: dict, section: str | None) -> dict | None:
    """The dict at dotted ``section`` of ``conf`` (None: conf itself), copied on the way down so
    that setting a key in it leaves the caller's nested dicts alone; None if it is not there."""
    holder = conf
    for part in section.split(".") if section else ():
        child = holder.get(part)
        if not isinstance(child, dict):
            return None
        holder[part] = child = dict(child)
        holder = child
    return holder


def _resolve_paths(conf: dict, root: Path, config_path: Path, what: str) -> dict:
    """config with every known path key made absolute against ``root``; missing ones refused."""
    conf = dict(conf)
    for section, key in PATH_KEYS:
        holder = _copied_section(conf, section)
        if holder is None:
            continue
        value = holder.get(key)
        if not isinstance(value, str) or not value or "://" in value or value in BUILT_IN_VALUES:
            continue  # token_list given inline as a list, a URL, a built-in name, or unset
        path = Path(value)
        if not path.is_absolute():
            path = root / path
        if not path.exists():
            name = key if section is None else f"{section}.{key}"
            raise BringError(
                f"{config_path}: {name} '{value}' not found (looked for {path}; relative paths "
                f"are taken from {what} '{root}'"
                + (", give --asr_recipe_dir" if what == "the recipe dir" else "") + ")")
        holder[key] = str(path.resolve())
    return conf


def _safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar member by member, refusing names that would land outside ``dest``."""
    def check(name: str) -> Path:
        target = (dest / name).resolve()
        if Path(name).is_absolute() or ".." in Path(name).parts or dest.resolve() not in (
                target, *target.parents):
            raise BringError(f"{archive}: member '{name}' would be written outside the unpack dir")
        return target

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                target = check(info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            for member in t.getmembers():
                target = check(member.name)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with t.extractfile(member) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                else:
                    raise BringError(f"{archive}: member '{member.name}' is a link or device; "
                                     "packed models hold plain files")
    else:
        raise BringError(f"{archive}: not a zip or tar archive")


def _decoding(conf: dict) -> dict:
    ctc_weight = float((conf.get("model_conf") or {}).get("ctc_weight", 0.5))
    has_decoder = conf.get("decoder") not in (None, "none")
    hybrid = has_decoder and ctc_weight < 1.0
    return {"method": "joint_ctc_attention" if hybrid else "ctc_greedy", "ctc_weight": ctc_weight}


def bring(source: str | Path, exp_dir: str | Path, recipe_dir: Optional[str | Path] = None,
          model_file: Optional[str | Path] = None, name: Optional[str] = None) -> dict:
    """Make ``exp_dir`` an experiment of the model at ``source``; returns its record.

    An existing ``exp_dir`` made from the same source, checkpoint and recipe dir is kept.
    """
    # torch: only when bringing (the records this module reads stay torch-free)
    from espnet_probe.asr.whisper import is_whisper_source
    from espnet_probe.utils.checkpoint import load_state_dict

    if is_whisper_source(source):
        return _bring_whisper(source, Path(exp_dir), name)
    source, exp_dir = Path(source).resolve(), Path(exp_dir)
    if not source.exists():
        raise BringError(f"ASR model {source} not found (give an ESPnet exp dir or a packed model)")
    settings = {"source": str(source), "recipe_dir": str(recipe_dir) if recipe_dir else None,
                "model_file": str(model_file) if model_file else None,
                "source_mtime": source.stat().st_mtime_ns}
    record = read_experiment(exp_dir)
    if record is not None and record.get("settings") == settings:
        return record
    with atomic_dir(exp_dir) as tmp:
        if source.is_dir():
            root = Path(recipe_dir).resolve() if recipe_dir else source.parent.parent
            config = source / "config.yaml"
            if not config.is_file():
                raise BringError(f"{source}: no config.yaml (not an ESPnet2 exp dir)")
            checkpoint = best_checkpoint(source, model_file).resolve()
            load_state_dict(checkpoint)  # tensors only: a file that would run code is refused now
            packed = False
            root_what = "the recipe dir"
        else:
            unpack = tmp / "packed"
            unpack.mkdir()
            _safe_extract(source, unpack)
            meta_path = unpack / "meta.yaml"
            if not meta_path.is_file():
                raise BringError(f"{source}: no meta.yaml (not made by espnet2.bin.pack)")
            meta = load_yaml(meta_path.read_text(encoding="utf-8")) or {}
            try:
                config = unpack / meta["yaml_files"]["asr_train_config"]
                checkpoint = unpack / (model_file or meta["files"]["asr_model_file"])
            except (KeyError, TypeError):
                raise BringError(f"{meta_path}: no asr_train_config / asr_model_file "
                                 "(pack it with espnet2.bin.pack asr)") from None
            for what, path in (("config", config), ("checkpoint", checkpoint)):
                if not path.is_file():
                    raise BringError(f"{source}: the {what} {path.relative_to(unpack)} named in "
                                     "meta.yaml is not in the archive")
            load_state_dict(checkpoint)
            # the archive is swapped in under exp_dir: name its files by their final place
            final = Path(exp_dir).resolve() / "packed"
            config, checkpoint = final / config.relative_to(unpack), final / checkpoint.relative_to(unpack)
            root, packed, root_what = unpack, True, "the archive's root"
        with open(config if not packed else tmp / "packed" / config.relative_to(final),
                  encoding="utf-8") as f:
            conf = load_yaml(f)
        if not isinstance(conf, dict) or "encoder" not in conf:
            raise BringError(f"{config}: not an ESPnet2 ASR training config (no encoder)")
        try:  # a family the layer map cannot probe is refused now, before any stage runs
            check_config(conf["encoder"], conf.get("frontend"))
        except UnsupportedFamily as e:
            raise BringError(f"{config}: {e}") from None
        resolved = _resolve_paths(conf, root, config, root_what)
        if packed:  # paths were checked in the unpack dir; store them at their final place
            resolved = json.loads(json.dumps(resolved).replace(str(unpack.resolve()), str(final)))
        with atomic_open(tmp / "config.yaml") as f:
            yaml.safe_dump(resolved, f, allow_unicode=True, sort_keys=False)
        record = {
            "kind": "asr", "origin": "brought", "model": name or default_name(source),
            "training": "brought", "source": str(source), "packed": packed,
            "config": str(config), "checkpoint": str(checkpoint),
            "input": input_kind(conf), "encoder": conf.get("encoder"),
            "frontend": conf.get("frontend") if input_kind(conf) == "wave" else None,
            "token_type": conf.get("token_type"), "decoding": _decoding(conf),
            "settings": settings,
        }
        with atomic_open(tmp / EXPERIMENT_FILE) as f:
            yaml.safe_dump(record, f, sort_keys=False)
    return record


def _bring_whisper(source: str | Path, exp_dir: Path, name: Optional[str]) -> dict:
    """A Whisper model (espnet_probe.asr.whisper): converted once into exp_dir/model.pth."""
    from espnet_probe.asr.whisper import source_path, whisper_experiment  # torch

    path = source_path(source)
    if not path.exists():
        raise BringError(f"Whisper model {source} not found")
    settings = {"source": str(source), "path": str(path), "source_mtime": path.stat().st_mtime_ns}
    record = read_experiment(exp_dir)
    if record is not None and record.get("settings") == settings:
        return record
    with atomic_dir(exp_dir) as tmp:
        facts = whisper_experiment(source, tmp)
        record = {"kind": "asr", "origin": "brought", "model": name or default_name(source),
                  "training": "brought", "source": str(source), "packed": False,
                  "config": str(exp_dir.resolve() / "config.yaml"),
                  "checkpoint": str(exp_dir.resolve() / "model.pth"), **facts, "settings": settings}
        with atomic_open(tmp / EXPERIMENT_FILE) as f:
            yaml.safe_dump(record, f, sort_keys=False)
    return record


def default_name(source: str | Path) -> str:
    """A model's name in tables: its exp dir's (or archive's) name without asr_ / extensions."""
    name = Path(source).name
    for suffix in (".zip", ".tgz", ".tar.gz", ".tar"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    name = name[4:] if name.startswith("asr_") else name
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in name) or "model"
