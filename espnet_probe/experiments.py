"""What a run makes, as records rather than directory names.

Every output dir of a run holds ``experiment.yaml``, its record: its kind and what it is made
from. Kinds:
- ``asr``: an ASR model: its name for the tables, its training (baseline | robust | brought), the
  config, and the ASR experiment it starts from (a robust model fine-tuned from its baseline);
- ``probe``: the layer probes of an ASR model (init trained, or random: the control) and the test
  conditions it decodes, vocodes and scores;
- ``speaker_id``: the linear speaker-ID probes of an ASR model's layers;
- ``oracle``: Griffin-Lim of the input log-mel itself, what a perfect probe would give (stage 8);
- ``original``: the unprocessed audio of every condition, scored (stage 11);
- ``speaker``: the ThinResNet speaker encoder (its config; stage 10);
- ``trials``: the speaker-verification trial lists of the clean test sets (stage 11);
- ``report``, ``demo``, ``listening``: stage 12's report, stage 13's demo page and listening test.
``plan`` writes the records of one run and ``<expdir>/experiments.yaml``, the ordered list of
their dirs. Stages ask ``select`` (``python -m espnet_probe.bin.experiments list``) which dirs to
run, and each record (``... get DIR FIELD``) what it is; nothing downstream parses a directory
name. Brought ASR models keep the record ``espnet_probe.asr.brought.bring`` wrote.

Directory names are chosen here once (``asr_<config>_<training>``, ``probe_<model>_<training>``,
``<asr exp>/speaker_id[_random]``, ``probe_oracle``, ``score_original``, ``speaker_<config>``,
``trials``, ``report``, ``demo``, ``listening/<name>``) and only ever read back through the records.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Optional

import yaml

from espnet_probe.utils.fileio import atomic_open
from espnet_probe.utils.yaml_io import load_yaml

EXPERIMENT_FILE = "experiment.yaml"
PLAN_FILE = "experiments.yaml"
KINDS = ("asr", "probe", "speaker_id", "oracle", "original", "speaker", "trials", "report", "demo",
         "listening")
# Tables and pages list a model's experiments in this order; brought = an ESPnet model trained
# outside this recipe (run.sh --asr_exps).
TRAINING_ORDER = {"baseline": 0, "robust": 1, "brought": 2, "random": 3, "": 4}
# The model names of the references in tables: Griffin-Lim of the input mel, the unprocessed audio
ORACLE_MODEL, ORIGINAL_MODEL = "oracle", "original"
# What the training of an ASR experiment was (local/train.sh writes it when it finishes):
# train_set, seconds, machine. Not part of the plan: write_plan keeps it while the plan's part
# of the record is unchanged.
TRAINED = "trained"


class ExperimentError(ValueError):
    """A plan or record that cannot be used; the message names the dir or file."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    kind: str
    dir: str
    model: str = ""          # the name in tables: ASR config basename, brought name, oracle, ...
    training: str = ""       # baseline | robust | brought | random
    init: str = ""           # asr, probe, speaker_id: trained | random (the control)
    asr_exp: str = ""        # probe, speaker_id: the ASR experiment whose encoder they read
    sets: tuple[str, ...] = ()  # probe, oracle, original: conditions decoded / scored; trials
    config: str = ""         # asr (trained here), speaker: the training config
    init_from: str = ""      # asr: the ASR experiment whose model it starts from ("": scratch)

    def record(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "dir" and v not in ("", ())}
        if self.sets:
            out["sets"] = list(self.sets)
        return out

    def field(self, name: str) -> str:
        """One field as the shell reads it (sets space-separated)."""
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise ExperimentError(f"unknown field '{name}' (fields: "
                                  f"{', '.join(f.name for f in dataclasses.fields(self))})")
        value = getattr(self, name)
        return " ".join(value) if isinstance(value, tuple) else str(value)


def read_experiment(exp_dir: str | Path) -> Optional[dict]:
    """The record in ``exp_dir`` as written (brought models' extra keys included), None if none."""
    path = Path(exp_dir) / EXPERIMENT_FILE
    if not path.is_file():
        return None
    try:
        record = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(record, dict):
        raise ExperimentError(f"{path}: not a record (a YAML mapping of fields)")
    return record


def plan(expdir: str | Path, asr_configs: Iterable[str], trainings: Iterable[str],
         brought: Iterable[str | Path] = (), controls: bool = True,
         test_sets: Iterable[str] = (), noisy_sets: Iterable[str] = (),
         control_conditions: str = "clean", robust_init: str = "scratch",
         speaker_config: str = "", listening_name: str = "default") -> list[Experiment]:
    """Every output of one run, in the order the stages make them. ``robust_init``: scratch, or
    baseline (each robust model starts from its config's trained baseline model)."""
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
        mine = [Experiment("asr", str(expdir / f"asr_{model}_{t}"), model, t, "trained",
                           config=str(config), init_from=from_baseline if t == "robust" else "")
                for t in trainings]
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
                                     a.training, "trained", a.dir, all_sets))
            speaker_ids.append(Experiment("speaker_id", str(Path(a.dir) / "speaker_id"), model,
                                          a.training, "trained", a.dir))
        if controls and exps:  # one control per architecture, of its first training's shape
            first = exps[0].dir
            probes.append(Experiment("probe", str(expdir / f"probe_{model}_random"), model,
                                     "random", "random", first, control_sets))
            speaker_ids.append(Experiment("speaker_id", str(Path(first) / "speaker_id_random"),
                                          model, "random", "random", first))
    outputs = [Experiment("oracle", str(expdir / "probe_oracle"), ORACLE_MODEL, sets=all_sets),
               Experiment("original", str(expdir / "score_original"), ORIGINAL_MODEL, sets=all_sets)]
    if speaker_config:
        name = Path(speaker_config).name.removesuffix(".yaml")
        outputs.append(Experiment("speaker", str(expdir / f"speaker_{name}"), name,
                                  config=str(speaker_config)))
    outputs += [Experiment("trials", str(expdir / "trials"), sets=tuple(test_sets)),
                Experiment("report", str(expdir / "report")),
                Experiment("demo", str(expdir / "demo")),
                Experiment("listening", str(expdir / "listening" / listening_name))]
    names = [e.dir for e in asr + probes + speaker_ids + outputs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ExperimentError(f"two experiments would share the dir {clash[0]}: give the ASR "
                              "configs or brought models distinct names")
    return asr + probes + speaker_ids + outputs


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
    dirs = (load_yaml(path.read_text(encoding="utf-8")) or {}).get("experiments") or []
    out = [load(d) for d in dirs]
    return [e for e in out if (kind is None or e.kind == kind) and (init is None or e.init == init)
            and (training is None or e.training == training)]


def probe_experiments(expdir: str | Path, names: Optional[Iterable[str]] = None,
                      kinds: tuple[str, ...] = ("probe",)) -> list[Experiment]:
    """The probe-decoded experiments a page or a listening test shows: the named ones (dirs under
    ``expdir``, or paths) if any, each of one of ``kinds`` (add ``oracle`` to allow the oracle),
    else every planned probe experiment; ordered by model, then training."""
    expdir = Path(expdir)
    if names:
        exps = []
        for name in names:
            path = expdir / name if (expdir / name).is_dir() or not Path(name).is_dir() else Path(name)
            if not path.is_dir():
                raise ExperimentError(f"{path}: no such experiment dir")
            exp = load(path)
            if exp.kind not in kinds:
                raise ExperimentError(f"{path}: its record is of kind {exp.kind}, "
                                      f"not {' or '.join(kinds)}")
            exps.append(exp)
    else:
        exps = select(expdir, kind="probe")
    return sorted(exps, key=lambda e: (e.model, TRAINING_ORDER.get(e.training, 9), Path(e.dir).name))


def training_rounds(experiments: Iterable[Experiment]) -> list[list[Experiment]]:
    """Stage 5's ASR trainings, in rounds that wait for the one before: the models trained from
    scratch, robust ones leading (with --robust_epoch all they see twice the data, so the longest
    jobs start first); then those that start from one of those (--robust_init baseline). Brought
    models were trained elsewhere."""
    asr = [e for e in experiments if e.kind == "asr" and e.training != "brought"]
    scratch = [e for e in asr if not e.init_from]
    robust_first = sorted(scratch, key=lambda e: e.training != "robust")  # stable: plan order
    return [robust_first, [e for e in asr if e.init_from]]


def listening_default(experiments: Iterable[Experiment]) -> Optional[Experiment]:
    """The probe experiment a listening test tests unless told otherwise, as the paper's Fig. 2b:
    the first model's robust probe, else its first trained one (None without trained probes)."""
    trained = [e for e in experiments if e.kind == "probe" and e.init == "trained"]
    if not trained:
        return None
    first_model = trained[0].model
    return next((e for e in trained if e.model == first_model and e.training == "robust"), trained[0])
