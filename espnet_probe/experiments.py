"""What the experiments of a run are, as records rather than directory names.

Every experiment dir holds ``experiment.yaml``: its kind (``asr``, ``probe``, ``speaker_id``),
the model's name for the tables, its training (baseline | robust | brought | random), its init
(trained | random: the control), the ASR experiment it reads, for probes the test conditions
it decodes, vocodes and scores and, for an ASR model that starts from another one (a robust
model fine-tuned from its baseline), that experiment. ``plan`` writes the records of one run (the ASR
models it trains, the ones it was brought, a probe and a speaker-ID probe of each, and the
random-encoder controls) and ``<expdir>/experiments.yaml``, the ordered list of their dirs.
Stages ask ``select`` (``python -m espnet_probe.bin.experiments list``) which experiments to
run and what each is; nothing downstream parses a directory name. Brought ASR models keep the
record ``espnet_probe.asr.brought.bring`` wrote (kind asr, training brought).

Directory names are chosen here once (``asr_<config>_<training>``, ``probe_<model>_<training>``,
``<asr exp>/speaker_id[_random]``) and only ever read back through the records.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Optional

import yaml

from espnet_probe.asr.brought import EXPERIMENT_FILE, read_experiment
from espnet_probe.utils.fileio import atomic_open

PLAN_FILE = "experiments.yaml"
KINDS = ("asr", "probe", "speaker_id")
# What the training of an ASR experiment was (local/asr_train.sh writes it when it finishes):
# train_set, seconds, machine. Not part of the plan: write_plan keeps it while the plan's part
# of the record is unchanged.
TRAINED = "trained"


class ExperimentError(ValueError):
    """A plan or record that cannot be used; the message names the dir or file."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    kind: str
    dir: str
    model: str
    training: str            # baseline | robust | brought | random
    init: str = "trained"    # trained | random (the randomly initialised control)
    asr_exp: str = ""        # probe, speaker_id: the ASR experiment whose encoder they read
    sets: tuple[str, ...] = ()  # probe: test conditions decoded, vocoded and scored
    config: str = ""         # asr (trained here): the training config
    init_from: str = ""      # asr: the ASR experiment whose model it starts from ("": scratch)

    def record(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "dir" and v not in ("", ())}
        if self.sets:
            out["sets"] = list(self.sets)
        return out

    def field(self, name: str) -> str:
        """One field as the shell reads it (sets comma-joined, '-' for empty)."""
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise ExperimentError(f"unknown field '{name}' (fields: "
                                  f"{', '.join(f.name for f in dataclasses.fields(self))})")
        value = getattr(self, name)
        value = ",".join(value) if isinstance(value, tuple) else str(value)
        return value or "-"


def plan(expdir: str | Path, asr_configs: Iterable[str], trainings: Iterable[str],
         brought: Iterable[str | Path] = (), controls: bool = True,
         test_sets: Iterable[str] = (), noisy_sets: Iterable[str] = (),
         control_conditions: str = "clean", robust_init: str = "scratch") -> list[Experiment]:
    """The experiments of one run, in the order the stages run them. ``robust_init``: scratch,
    or baseline (each robust model starts from its config's trained baseline model)."""
    expdir = Path(expdir)
    trainings, test_sets, noisy_sets = list(trainings), list(test_sets), list(noisy_sets)
    if control_conditions not in ("clean", "all"):
        raise ExperimentError(f"control_conditions must be clean or all, got '{control_conditions}'")
    if robust_init not in ("scratch", "baseline"):
        raise ExperimentError(f"robust_init must be scratch or baseline, got '{robust_init}'")
    if robust_init == "baseline" and "robust" in trainings and "baseline" not in trainings:
        raise ExperimentError("robust_init baseline needs the baseline training too "
                              f"(trainings: {' '.join(trainings)})")
    all_sets = tuple(test_sets + noisy_sets)
    control_sets = tuple(test_sets) if control_conditions == "clean" else all_sets
    asr: list[Experiment] = []
    groups: list[tuple[str, list[Experiment]]] = []  # (model, its ASR experiments)
    for config in asr_configs:
        model = Path(config).name.removesuffix(".yaml")
        from_baseline = str(expdir / f"asr_{model}_baseline") if robust_init == "baseline" else ""
        mine = [Experiment("asr", str(expdir / f"asr_{model}_{t}"), model, t, config=str(config),
                           init_from=from_baseline if t == "robust" else "") for t in trainings]
        asr += mine
        groups.append((model, mine))
    for exp_dir in brought:
        record = read_experiment(exp_dir)
        if not record or record.get("kind") != "asr":
            raise ExperimentError(f"{exp_dir}: no ASR record ({EXPERIMENT_FILE}); bring it first "
                                  "(python -m espnet_probe.bin.bring_asr)")
        exp = load(exp_dir)
        asr.append(exp)
        groups.append((exp.model, [exp]))
    probes, speaker_ids = [], []
    for model, exps in groups:
        for a in exps:
            probes.append(Experiment("probe", str(expdir / f"probe_{model}_{a.training}"), model,
                                     a.training, asr_exp=a.dir, sets=all_sets))
            speaker_ids.append(Experiment("speaker_id", str(Path(a.dir) / "speaker_id"), model,
                                          a.training, asr_exp=a.dir))
        if controls and exps:  # one control per architecture, of its first training's shape
            first = exps[0].dir
            probes.append(Experiment("probe", str(expdir / f"probe_{model}_random"), model,
                                     "random", "random", first, control_sets))
            speaker_ids.append(Experiment("speaker_id", str(Path(first) / "speaker_id_random"),
                                          model, "random", "random", first))
    names = [e.dir for e in asr + probes + speaker_ids]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ExperimentError(f"two experiments would share the dir {clash[0]}: give the ASR "
                              "configs or brought models distinct names")
    return asr + probes + speaker_ids


def write_plan(expdir: str | Path, experiments: list[Experiment]) -> None:
    """Each experiment's record in its dir (brought ASR records are left as they are), then the
    ordered list of dirs in <expdir>/experiments.yaml; a record that changed is rewritten."""
    expdir = Path(expdir)
    for exp in experiments:
        path = Path(exp.dir) / EXPERIMENT_FILE
        existing = read_experiment(exp.dir)
        if exp.kind == "asr" and existing and existing.get("training") == "brought":
            continue
        if existing and {k: v for k, v in existing.items() if k != TRAINED} == exp.record():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as f:
            yaml.safe_dump(exp.record(), f, sort_keys=False)
    expdir.mkdir(parents=True, exist_ok=True)
    with atomic_open(expdir / PLAN_FILE) as f:
        yaml.safe_dump({"experiments": [e.dir for e in experiments]}, f, sort_keys=False)


def note_trained(exp_dir: str | Path, train_set: str, seconds: int, machine: str) -> None:
    """Add what its training was to an experiment's record."""
    record = read_experiment(exp_dir)
    if not record:
        raise ExperimentError(f"{exp_dir}: no {EXPERIMENT_FILE} to note the training in")
    record[TRAINED] = {"train_set": train_set, "seconds": int(seconds), "machine": machine}
    with atomic_open(Path(exp_dir) / EXPERIMENT_FILE) as f:
        yaml.safe_dump(record, f, sort_keys=False)


def load(exp_dir: str | Path) -> Experiment:
    """The experiment a dir holds, from its record."""
    record = read_experiment(exp_dir)
    if not record:
        raise ExperimentError(f"{exp_dir}: no {EXPERIMENT_FILE} (not an experiment of a plan)")
    fields = {f.name for f in dataclasses.fields(Experiment)}
    try:
        return Experiment(**{k: (tuple(v) if k == "sets" else v) for k, v in record.items()
                             if k in fields}, dir=str(exp_dir))
    except TypeError as e:
        raise ExperimentError(f"{Path(exp_dir) / EXPERIMENT_FILE}: {e}") from None


def select(expdir: str | Path, kind: Optional[str] = None, init: Optional[str] = None,
           training: Optional[str] = None) -> list[Experiment]:
    """The planned experiments of <expdir>, in plan order, filtered by kind / init / training."""
    path = Path(expdir) / PLAN_FILE
    if not path.is_file():
        raise ExperimentError(f"{path}: no plan (run.sh writes it before stage 5)")
    dirs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("experiments") or []
    out = [load(d) for d in dirs]
    return [e for e in out if (kind is None or e.kind == kind) and (init is None or e.init == init)
            and (training is None or e.training == training)]
