"""The study grid: what a study trains (paper §5.1, Tables 1 and 2): methods × label amounts × folds (× seeds).

Every run of the grid is an ordinary training run whose config is the study's config file plus a list of overrides:
the protocol's, the user's, then the grid's (labelled amount, fold, seed, method). A method is nothing but its
overrides (:data:`METHODS`); the mix and factor studies add named variants (:mod:`sdnet.study.variants`). Each run
gets its own folder ``<study>/<method>/<label>/fold<k>`` (``.../fold<k>-seed<s>`` when there are several seeds).
This module only *plans* (:func:`plan_study` → :class:`StudyPlan`); :mod:`sdnet.study.runner` executes a plan.

Typical use (the CLI ``sdnet experiment semi`` does exactly this)::

    plan = plan_study(config_path="experiments/configs/acdc_semi_cpu.yaml", data_root="data/acdc_ssl4mis",
                      methods=["sdnet", "sdnet-noadv"], labels=labelled_subjects([1, 3, 7]),
                      protocol="ssl4mis")
    summary = run_study(plan, "studies/semi", jobs=2, on_event=print)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from sdnet.config import ConfigError, RunConfig, apply_overrides, load_config
from sdnet.study.results import (
    STUDY_SCHEMA,
    StudyError,
    read_json_object,
    write_json,
)

Protocol = Literal["paper", "ssl4mis"]
RunState = Literal["done", "trained", "partial", "new"]

#: The compared methods (paper §4.3) and the SDNet ablations, each as the config overrides that select it.
METHODS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "unet": ("train.method=unet",),
    "gan": ("train.method=gan",),
    "gan-intensity": ("train.method=gan", "data.augment_intensity=0.5"),  # hand-made appearance changes
    "selftrain": ("train.method=selftrain",),
    "sdnet": (),
    "sdnet-nozrec": ("loss.zrec=0",),
    "sdnet-nobin": ("model.binarisation=none",),
    "sdnet-round": ("model.binarisation=round",),
    "sdnet-argmax": ("model.binarisation=argmax",),
    "sdnet-joint": ("train.schedule=joint",),
    "sdnet-noadv": ("loss.adv=0",),
    "sdnet-norec": ("loss.rec=0",),
    "sdnet-nokl": ("loss.kl=0",),
    "sdnetplus": ("loss.mix=10", "loss.acons=10"),
    "sdnetplus-mix": ("loss.mix=10",),
    "sdnetplus-acons": ("loss.acons=10",),
    "sdnetplus-own": ("loss.mix=10", "train.plus_z=own"),  # control: re-rendered with each image's own z
    "sdnetplus-input": ("loss.mix=10", "train.plus_z=input"),  # control: the extra update on the input images
    "sdnetplus-teacher": ("loss.mix=10", "train.plus_teacher=0.99"),  # targets from an EMA (mean) teacher
    # control: sdnetplus-input's self-training step on the GAN baseline's U-Net (no factors at all)
    "ganplus-input": ("train.method=gan", "loss.mix=10", "train.plus_z=input"),
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
