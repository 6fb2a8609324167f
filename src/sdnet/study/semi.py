"""The semi-supervised study of the paper (§5.1, Tables 1 and 2): methods × label amounts × folds (× seeds).

Every run of the grid is an ordinary training run (:class:`~sdnet.training.Trainer`) whose config is the study's
config file plus a list of overrides: the protocol's, the user's, then the grid's (labelled amount, fold, seed,
method). A method is nothing but its overrides (:data:`METHODS`). Each run gets its own folder
``<study>/<method>/<label>/fold<k>`` (``.../fold<k>-seed<s>`` when there are several seeds) holding the trainer's
outputs and, after training, ``result.json``: the scores of ``best.pt`` on the run's *test* subjects only
(:mod:`sdnet.study.results`).

Runs are restartable: a run whose ``result.json`` is a study result is skipped; a run folder with ``last.pt`` but
no result is resumed (:meth:`Trainer.resume <sdnet.training.Trainer.resume>`); a finished training whose
evaluation was interrupted is only evaluated. A folder trained with other settings is refused, never mixed in.

Typical use (the CLI ``sdnet experiment semi`` does exactly this)::

    plan = plan_study(config_path="experiments/configs/acdc_semi_cpu.yaml", data_root="data/acdc_ssl4mis",
                      methods=["sdnet", "sdnet-noadv"], labels=labelled_subjects([1, 3, 7]),
                      protocol="ssl4mis")
    summary = run_study(plan, "studies/semi", jobs=2, on_event=print)
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from sdnet.config import ConfigError, RunConfig, apply_overrides, load_config, to_dict
from sdnet.evaluation import evaluate_checkpoint
from sdnet.study.results import (
    STUDY_SCHEMA,
    RunResult,
    StudyError,
    is_study_result,
    read_json_object,
    volume_results,
    write_json,
)

Protocol = Literal["paper", "ssl4mis"]
RunState = Literal["done", "trained", "partial", "new"]
EventKind = Literal["started", "resumed", "evaluating", "finished", "skipped", "failed"]

#: The compared methods (paper §4.3) and the SDNet ablations, each as the config overrides that select it.
METHODS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "unet": ("train.method=unet",),
    "gan": ("train.method=gan",),
    "selftrain": ("train.method=selftrain",),
    "sdnet": (),
    "sdnet-nozrec": ("loss.zrec=0",),
    "sdnet-nobin": ("model.binarisation=none",),
    "sdnet-round": ("model.binarisation=round",),
    "sdnet-argmax": ("model.binarisation=argmax",),
    "sdnet-joint": ("train.schedule=joint",),
    "sdnet-noadv": ("loss.adv=0",),
})

#: Overrides of each protocol, applied before the user's ``--set`` values.
#: ``paper``: seeded 70/15/15 subject split, folds rotate the test block (paper §4.2, 3-fold cross-validation);
#: ``ssl4mis``: the release's fixed 70/10/20 patient lists (one split).
PROTOCOLS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "paper": ("data.split=random", "data.val_fraction=0.15", "data.test_fraction=0.15"),
    "ssl4mis": ("data.split=ssl4mis",),
})
DEFAULT_FOLDS: Mapping[str, int] = MappingProxyType({"paper": 3, "ssl4mis": 1})

#: Keys the grid sets: a ``--set`` of one of them would silently defeat the grid, so it is an error.
GRID_KEYS = frozenset({"data.fold", "data.labelled_subjects", "data.labelled_fraction", "data.split", "train.method"})
#: Keys that say where and how a run executes, not what it computes: they may differ between invocations of the
#: same study (another machine, another ``--jobs``) without making its finished runs stale.
PLACE_KEYS = ("data.root", "data.cache_dir", "train.num_threads", "train.device")


@dataclass(frozen=True)
class LabelAmount:
    """How many training subjects are labelled: an exact count (``subjects``) or a ``fraction`` of them."""

    subjects: int = 0
    fraction: float = 0.0

    def __post_init__(self) -> None:
        if (self.subjects > 0) == (self.fraction > 0):
            raise StudyError("a label amount is either a number of subjects or a fraction, not both or neither")
        if self.subjects < 0:
            raise StudyError(f"labelled subjects must be >= 1, got {self.subjects}")
        if not 0 <= self.fraction <= 1:
            raise StudyError(f"labelled fraction must lie in (0, 1], got {self.fraction}")

    @property
    def key(self) -> str:
        """Folder name: ``l<N>`` for N subjects, ``f<F>`` for a fraction F (e.g. ``l3``, ``f0.125``)."""
        return f"l{self.subjects}" if self.subjects else f"f{self.fraction:g}"

    @property
    def text(self) -> str:
        if self.subjects:
            return f"{self.subjects} subject" + ("s" if self.subjects != 1 else "")
        return f"{100 * self.fraction:g}% of subjects"

    @property
    def overrides(self) -> tuple[str, ...]:
        if self.subjects:
            return (f"data.labelled_subjects={self.subjects}",)
        return ("data.labelled_subjects=0", f"data.labelled_fraction={self.fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"subjects": self.subjects or None, "fraction": self.fraction or None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelAmount:
        return cls(subjects=int(data.get("subjects") or 0), fraction=float(data.get("fraction") or 0.0))


def labelled_subjects(counts: Iterable[int]) -> tuple[LabelAmount, ...]:
    """Label amounts as subject counts (``--labelled 1,3,7,70``)."""
    out = []
    for n in counts:
        if int(n) < 1:
            raise StudyError(f"labelled subjects must be >= 1, got {n}")
        out.append(LabelAmount(subjects=int(n)))
    return tuple(out)


def labelled_fractions(fractions: Iterable[float]) -> tuple[LabelAmount, ...]:
    """Label amounts as fractions of the training subjects (``--fractions 0.1,0.5``)."""
    out = []
    for f in fractions:
        if not 0 < float(f) <= 1:
            raise StudyError(f"labelled fraction must lie in (0, 1], got {f}")
        out.append(LabelAmount(fraction=float(f)))
    return tuple(out)


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: where it lives and the overrides that make its config from the study's config file.

    Attributes:
        index: position in the deterministic grid order (``--run-index``).
        name: run folder relative to the study folder, ``<method>/<label>/fold<k>[-seed<s>]``.
        protocol: ``paper`` or ``ssl4mis``.
        overrides: every override applied to the config file, in order (protocol, user, label, fold, seed,
            method).
        variant: the overrides of a variant that is not one of :data:`METHODS` (a modality mixture, a factor
            size; :mod:`sdnet.study.variants`), empty for the methods.
    """

    index: int
    name: str
    method: str
    label: LabelAmount
    fold: int
    seed: int
    protocol: str
    overrides: tuple[str, ...]
    variant: tuple[str, ...] = ()

    @property
    def method_overrides(self) -> tuple[str, ...]:
        return (*METHODS.get(self.method, ()), *self.variant)

    @property
    def grid_overrides(self) -> tuple[str, ...]:
        """The overrides that make this run differ from the others: label amount, fold, seed, method."""
        return (*self.label.overrides, f"data.fold={self.fold}", f"train.seed={self.seed}", *self.method_overrides)

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "name": self.name, "method": self.method, "label": self.label.key,
               "labelled": self.label.to_dict(), "fold": self.fold, "seed": self.seed,
               "protocol": self.protocol, "overrides": list(self.overrides)}
        if self.variant:
            out["variant"] = list(self.variant)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        return cls(index=int(data["index"]), name=str(data["name"]), method=str(data["method"]),
                   label=LabelAmount.from_dict(data["labelled"]), fold=int(data["fold"]), seed=int(data["seed"]),
                   protocol=str(data.get("protocol", "")), overrides=tuple(str(o) for o in data["overrides"]),
                   variant=tuple(str(o) for o in data.get("variant", ())))


@dataclass(frozen=True)
class StudyGrid:
    """The definition of a study, saved as ``study.json`` in the study folder (what ``table`` reads)."""

    config_path: str
    protocol: str
    methods: tuple[str, ...]
    labels: tuple[LabelAmount, ...]
    folds: tuple[int, ...]
    seeds: tuple[int, ...]
    base_overrides: tuple[str, ...]
    runs: tuple[RunSpec, ...]
    kind: str = "semi"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": STUDY_SCHEMA, "kind": self.kind, "config": self.config_path, "protocol": self.protocol,
            "methods": list(self.methods),
            "method_overrides": {m: list(next((r.method_overrides for r in self.runs if r.method == m),
                                              METHODS.get(m, ()))) for m in self.methods},
            "labels": [{"key": a.key, **a.to_dict()} for a in self.labels], "folds": list(self.folds),
            "seeds": list(self.seeds), "base_overrides": list(self.base_overrides),
            "runs": [r.to_dict() for r in self.runs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyGrid:
        if data.get("schema") != STUDY_SCHEMA:
            raise StudyError(f"not a study definition (schema {data.get('schema')!r}, expected {STUDY_SCHEMA!r})")
        try:
            return cls(
                config_path=str(data.get("config") or ""), protocol=str(data["protocol"]),
                methods=tuple(str(m) for m in data["methods"]),
                labels=tuple(LabelAmount.from_dict(a) for a in data["labels"]),
                folds=tuple(int(k) for k in data["folds"]), seeds=tuple(int(s) for s in data["seeds"]),
                base_overrides=tuple(str(o) for o in data.get("base_overrides", ())),
                runs=tuple(RunSpec.from_dict(r) for r in data["runs"]), kind=str(data.get("kind", "semi")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StudyError(f"malformed study definition ({type(exc).__name__}: {exc})") from None

    def write(self, study_dir: str | Path) -> Path:
        out = Path(study_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "study.json"
        write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, study_dir: str | Path) -> StudyGrid:
        """Read ``study.json``; :class:`StudyError` naming the file when it is missing or malformed."""
        path = Path(study_dir) / "study.json"
        data = read_json_object(path, what="a study definition", missing=f"missing (is {study_dir} a study folder "
                                "written by `sdnet experiment semi`?)")
        try:
            return cls.from_dict(data)
        except StudyError as exc:
            raise StudyError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class StudyPlan:
    """A grid with the resolved config of each run (``configs[i]`` belongs to ``grid.runs[i]``)."""

    grid: StudyGrid
    configs: tuple[RunConfig, ...]

    @property
    def runs(self) -> tuple[RunSpec, ...]:
        return self.grid.runs


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def plan_study(
    *,
    config_path: str | Path | None,
    methods: Sequence[str],
    labels: Sequence[LabelAmount],
    protocol: Protocol = "paper",
    folds: int | None = None,
    seeds: int = 1,
    data_root: str | Path | None = None,
    overrides: Sequence[str] = (),
    variants: Mapping[str, Sequence[str]] | None = None,
    kind: str = "semi",
) -> StudyPlan:
    """Build the grid methods × label amounts × folds × seeds, in that (deterministic) order, and resolve every
    run's config, so that a bad key or value fails here, before anything trains.

    Args:
        config_path: YAML run config (None = the defaults, the paper's configuration).
        methods: names in :data:`METHODS`.
        labels: label amounts (:func:`labelled_subjects` or :func:`labelled_fractions`).
        protocol: ``paper`` (random 70/15/15 split, folds 0..k-1) or ``ssl4mis`` (the fixed lists, one fold).
        folds: number of folds (default 3 for ``paper``, 1 for ``ssl4mis``).
        seeds: number of training seeds per cell: ``train.seed`` = the config's seed + 0, 1, ... (the subject
            split, ``data.split_seed``, stays fixed so that seeds differ only in training).
        data_root: dataset folder (overrides ``data.root``; made absolute).
        overrides: the user's ``section.key=value`` overrides, applied after the protocol's and before the grid's.
        variants: SDNet variants by name -> their overrides (modality mixtures, factor sizes:
            :mod:`sdnet.study.variants`); such names may then appear in ``methods`` beside those of :data:`METHODS`.
        kind: what the study is (``semi``, ``mix``, ``factors``), recorded in ``study.json`` for ``table``.

    Raises:
        StudyError: unknown method or protocol, empty grid, an override of a grid key, no dataset, a config file
            that sets ``train.method``.
        ConfigError: a bad key or value in the config file or an override.
    """
    if protocol not in PROTOCOLS:
        raise StudyError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    methods = list(dict.fromkeys(m.strip() for m in methods if m.strip()))
    extra = {name: tuple(o) for name, o in (variants or {}).items()}
    unknown = [m for m in methods if m not in METHODS and m not in extra]
    if unknown:
        raise StudyError(f"unknown method(s) {', '.join(unknown)} (known: {', '.join([*METHODS, *extra])})")
    labels = list(dict.fromkeys(labels))
    n_folds = DEFAULT_FOLDS[protocol] if folds is None else folds
    if not methods or not labels or n_folds < 1 or seeds < 1:
        raise StudyError(f"empty grid: {len(methods)} methods x {len(labels)} label amounts x {n_folds} folds x "
                         f"{seeds} seeds")
    if protocol == "ssl4mis" and n_folds != 1:
        raise StudyError("the ssl4mis protocol has one fixed split: use --folds 1 (and --seeds for repeats)")
    variant_keys = {_key(o) for v in extra.values() for o in v}
    clashes = sorted({_key(o) for o in overrides} & (GRID_KEYS | variant_keys))
    if clashes:
        raise StudyError(f"--set {', '.join(clashes)} is decided by the study grid (use --methods, --labelled, "
                         "--fractions, --folds or --protocol)")
    base_overrides = [*overrides]
    if data_root is not None:
        base_overrides.append(f"data.root={json.dumps(str(Path(data_root).resolve()))}")
    base = load_config(config_path, [*PROTOCOLS[protocol], *base_overrides])
    if not base.data.root:
        raise StudyError("no dataset given: pass --data DIR (or set data.root in the config)")
    configured = getattr(base.train, "method", "sdnet")
    if configured != "sdnet":  # the SDNet rows (no overrides) would silently train another method
        raise StudyError(f"the config sets train.method={configured}; a study chooses methods with --methods")
    seed_values = tuple(base.train.seed + i for i in range(seeds))
    runs: list[RunSpec] = []
    configs: list[RunConfig] = []
    for method in methods:
        for label in labels:
            for fold in range(n_folds):
                for seed in seed_values:
                    name = f"{method}/{label.key}/fold{fold}" + (f"-seed{seed}" if seeds > 1 else "")
                    spec = RunSpec(index=len(runs), name=name, method=method, label=label, fold=fold, seed=seed,
                                   protocol=protocol, overrides=(), variant=extra.get(method, ()))
                    spec = dataclasses.replace(
                        spec, overrides=(*PROTOCOLS[protocol], *base_overrides, *spec.grid_overrides))
                    try:
                        configs.append(apply_overrides(base, spec.grid_overrides))
                    except ConfigError as exc:
                        raise ConfigError(f"run {name}: {exc}") from None
                    runs.append(spec)
    grid_def = StudyGrid(
        config_path=str(Path(config_path).resolve()) if config_path is not None else "", protocol=protocol,
        methods=tuple(methods), labels=tuple(labels), folds=tuple(range(n_folds)), seeds=seed_values,
        base_overrides=tuple(base_overrides), runs=tuple(runs), kind=kind,
    )
    return StudyPlan(grid=grid_def, configs=tuple(configs))


# ---------------------------------------------------------------------------------------------------- run state
def run_state(run_dir: str | Path) -> RunState:
    """``done`` (a study result.json), ``trained`` (training finished: the trainer's result.json and best.pt, not
    yet evaluated), ``partial`` (a last.pt to resume from) or ``new``."""
    d = Path(run_dir)
    result = d / "result.json"
    if result.exists() and is_study_result(result):
        return "done"
    if result.exists() and (d / "best.pt").exists():
        return "trained"
    if (d / "last.pt").exists():
        return "partial"
    return "new"


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: RunConfig, planned: RunConfig) -> list[str]:
    """Keys (outside :data:`PLACE_KEYS`) whose values differ, as ``key (saved -> planned)``."""
    a, b = _flat(to_dict(saved)), _flat(to_dict(planned))
    return [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in sorted(set(a) | set(b))
            if k not in PLACE_KEYS and a.get(k) != b.get(k)]


def check_existing_runs(plan: StudyPlan, study_dir: str | Path, indices: Iterable[int] | None = None) -> None:
    """Refuse to reuse run folders that were trained with other settings than the plan's (keys outside
    :data:`PLACE_KEYS`); ``indices`` restricts the check to those runs.

    Raises:
        StudyError: naming the first mismatching runs and keys.
    """
    problems = []
    for i in range(len(plan.runs)) if indices is None else indices:
        spec, config = plan.runs[i], plan.configs[i]
        saved_path = Path(study_dir) / spec.name / "config.yaml"
        if not saved_path.exists():
            continue
        try:
            saved = load_config(saved_path)
        except ConfigError as exc:
            raise StudyError(f"{saved_path}: {exc}") from None
        diff = config_differences(saved, config)
        if diff:
            problems.append(f"{spec.name}: {', '.join(diff[:3])}" + (" ..." if len(diff) > 3 else ""))
    if problems:
        raise StudyError(f"{study_dir} holds runs made with other settings ({'; '.join(problems[:3])}"
                         + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")
                         + "); use another --out or delete those run folders")


# ---------------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class RunOutcome:
    """What :func:`execute_run` did: ``status`` is ``finished`` or ``skipped``; ``state`` the folder's state
    before it started."""

    spec: RunSpec
    status: Literal["finished", "skipped"]
    state: RunState
    result: RunResult | None


def _place_overrides(config: RunConfig) -> list[str]:
    flat = _flat(to_dict(config))
    return [f"{k}={json.dumps(flat[k])}" for k in PLACE_KEYS]


def execute_run(spec: RunSpec, config: RunConfig, study_dir: str | Path, *, with_hd95: bool = True) -> RunOutcome:
    """Train (or resume, or only evaluate) one run and write its ``result.json``; skip a run already done.

    ``config`` is the run's resolved config (thread count included). Evaluation is of ``best.pt`` on the run's
    test subjects; ``eval_test/`` gets the usual ``per_volume.csv`` and ``summary.md``.
    """
    from sdnet.training import Trainer

    t0 = time.perf_counter()
    run_dir = Path(study_dir) / spec.name
    state = run_state(run_dir)
    if state == "done":
        return RunOutcome(spec=spec, status="skipped", state=state, result=None)
    volumes = None
    if state == "trained":
        training = json.loads((run_dir / "result.json").read_text())
        if config.train.num_threads > 0:
            import torch

            torch.set_num_threads(config.train.num_threads)
    else:
        if state == "partial":
            trainer = Trainer.resume(run_dir, overrides=_place_overrides(config))
        else:
            (run_dir / "log.jsonl").unlink(missing_ok=True)  # lines of a run killed before its first checkpoint
            trainer = Trainer(config, run_dir)
        fit = trainer.fit()
        training = {"steps": fit.steps, "epochs": fit.epochs, "best_val_dice": fit.best_val_dice,
                    "best_epoch": fit.best_epoch, "stop_reason": fit.stop_reason, "elapsed_s": trainer.elapsed}
        volumes = trainer.data.test
        del trainer
    t_eval = time.perf_counter()
    evaluation = evaluate_checkpoint(run_dir / "best.pt", volumes=volumes, data_root=config.data.root,
                                     device=config.train.device, with_hd95=with_hd95)
    evaluation.report.write(run_dir / "eval_test", title=f"{spec.name}: test evaluation of best.pt")
    eval_time = time.perf_counter() - t_eval
    split = evaluation.split
    best_val = training.get("best_val_dice")
    result = RunResult(
        name=spec.name, method=spec.method, label=spec.label.key,
        labelled_subjects=spec.label.subjects or None, labelled_fraction=spec.label.fraction or None,
        n_labelled_subjects=len(split.labelled), n_train_subjects=len(split.train), fold=spec.fold, seed=spec.seed,
        protocol=spec.protocol, overrides=spec.overrides, method_overrides=spec.method_overrides,
        class_names=tuple(evaluation.report.class_names), volumes=volume_results(evaluation.report),
        hd95_unit=evaluation.report.hd95_unit, checkpoint="best.pt", steps=int(training.get("steps", 0)),
        epochs=int(training.get("epochs", 0)), stop_reason=str(training.get("stop_reason", "")),
        best_val_dice=math.nan if best_val is None else float(best_val),
        best_epoch=int(training.get("best_epoch", -1)), train_time_s=float(training.get("elapsed_s", 0.0)),
        eval_time_s=eval_time, wall_time_s=time.perf_counter() - t0, num_threads=config.train.num_threads,
    )
    result.write(run_dir)
    return RunOutcome(spec=spec, status="finished", state=state, result=result)


def _execute_in_worker(spec: RunSpec, config: RunConfig, study_dir: str, with_hd95: bool) -> RunOutcome:
    """Entry point of a spawned worker process (top level, so that it pickles)."""
    return execute_run(spec, config, study_dir, with_hd95=with_hd95)


# ---------------------------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class RunEvent:
    """Progress of a study, one per run started / resumed / evaluating / finished / skipped / failed."""

    kind: EventKind
    spec: RunSpec
    total: int
    detail: str = ""

    def line(self) -> str:
        """``[3/16] finished sdnet/l3/fold0: test Dice 0.812 ...``"""
        return f"[{self.spec.index + 1}/{self.total}] {self.kind} {self.spec.name}" + (
            f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class StudySummary:
    """What :func:`run_study` did, by run name."""

    finished: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.failed


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _with_threads(config: RunConfig, threads: int) -> RunConfig:
    if config.train.num_threads > 0:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, num_threads=threads))


def _finished_detail(outcome: RunOutcome) -> str:
    r = outcome.result
    if r is None:
        return ""
    per_class = ", ".join(f"{n} {v:.3f}" for n, v in zip(r.class_names, r.class_means("3d"), strict=True))
    return (f"test 3D Dice {r.mean_dice('3d'):.3f} ({per_class}) on {len(r.volumes)} volumes; {r.steps} steps, "
            f"{r.wall_time_s / 60:.1f} min")


def _error_text(exc: BaseException) -> str:
    from sdnet.errors import SDNetError

    return str(exc) if isinstance(exc, SDNetError) else f"{type(exc).__name__}: {exc}"


def run_study(
    plan: StudyPlan,
    study_dir: str | Path,
    *,
    jobs: int = 1,
    run_index: int | None = None,
    cores: int | None = None,
    with_hd95: bool = True,
    on_event: Callable[[RunEvent], None] | None = None,
) -> StudySummary:
    """Run the plan's grid in ``study_dir`` (writes ``study.json`` first), skipping finished runs.

    Args:
        plan: from :func:`plan_study`.
        study_dir: the study folder (created).
        jobs: runs at a time; with more than one, each run trains in its own spawned process.
        run_index: run only the run with this index of the grid (cluster job arrays).
        cores: CPU cores to share (default: those available); a run whose config leaves ``train.num_threads`` at 0
            gets ``max(1, cores // jobs)`` threads.
        with_hd95: also compute HD95 in the test evaluation.
        on_event: called with a :class:`RunEvent` for every run started, finished, skipped, ...

    A run that fails does not stop the others: its traceback is written to ``<run>/error.log`` and it is listed in
    the summary's ``failed``.

    Raises:
        StudyError: bad ``jobs`` or ``run_index``; run folders trained with other settings.
    """
    if jobs < 1:
        raise StudyError(f"--jobs must be >= 1, got {jobs}")
    total = len(plan.runs)
    if run_index is not None and not 0 <= run_index < total:
        raise StudyError(f"--run-index {run_index} is out of range: the grid has {total} runs (0..{total - 1})")
    out = Path(study_dir)
    selected = [run_index] if run_index is not None else list(range(total))
    check_existing_runs(plan, out, selected)
    plan.grid.write(out)
    threads = max(1, (cores or available_cores()) // jobs)
    emit = on_event or (lambda event: None)
    finished: list[str] = []
    skipped: list[str] = []
    failed: list[tuple[str, str]] = []
    todo: list[tuple[RunSpec, RunConfig]] = []
    for i in selected:
        spec = plan.runs[i]
        if run_state(out / spec.name) == "done":
            skipped.append(spec.name)
            emit(RunEvent("skipped", spec, total, "result.json exists"))
        else:
            todo.append((spec, _with_threads(plan.configs[i], threads)))

    def started(spec: RunSpec, config: RunConfig) -> None:
        state = run_state(out / spec.name)
        kind: EventKind = "resumed" if state == "partial" else "evaluating" if state == "trained" else "started"
        emit(RunEvent(kind, spec, total, f"{config.train.num_threads} threads"))

    def done(spec: RunSpec, outcome: RunOutcome | None, exc: BaseException | None) -> None:
        if exc is not None:
            run_dir = out / spec.name
            run_dir.mkdir(parents=True, exist_ok=True)
            log_path = run_dir / "error.log"
            log_path.write_text("".join(traceback.format_exception(exc)))
            failed.append((spec.name, _error_text(exc)))
            emit(RunEvent("failed", spec, total, f"{_error_text(exc)} (traceback in {log_path})"))
        elif outcome is not None and outcome.status == "skipped":
            skipped.append(spec.name)
            emit(RunEvent("skipped", spec, total, "result.json exists"))
        elif outcome is not None:
            finished.append(spec.name)
            emit(RunEvent("finished", spec, total, _finished_detail(outcome)))

    if jobs == 1 or len(todo) <= 1:
        for spec, config in todo:
            started(spec, config)
            try:
                outcome = execute_run(spec, config, out, with_hd95=with_hd95)
            except Exception as exc:
                done(spec, None, exc)
            else:
                done(spec, outcome, None)
    else:
        _run_parallel(todo, out, jobs, with_hd95, started, done)
    return StudySummary(finished=tuple(finished), skipped=tuple(skipped), failed=tuple(failed))


def _run_parallel(
    todo: list[tuple[RunSpec, RunConfig]],
    out: Path,
    jobs: int,
    with_hd95: bool,
    started: Callable[[RunSpec, RunConfig], None],
    done: Callable[[RunSpec, RunOutcome | None, BaseException | None], None],
) -> None:
    """At most ``jobs`` runs in flight, each in a spawned process; a run is submitted (and reported started) only
    when a worker is free, so that 'started' means started."""
    queue = list(reversed(todo))
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        running: dict[cf.Future[RunOutcome], RunSpec] = {}
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    spec, config = queue.pop()
                    started(spec, config)
                    try:
                        future = pool.submit(_execute_in_worker, spec, config, str(out), with_hd95)
                    except BrokenProcessPool as broken:  # a worker died (e.g. out of memory): fail the rest
                        done(spec, None, broken)
                        continue
                    running[future] = spec
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    spec = running.pop(future)
                    exc = future.exception()
                    done(spec, None if exc is not None else future.result(), exc)
        except BaseException:
            for future in running:
                future.cancel()
            raise
