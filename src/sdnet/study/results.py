"""What a study run leaves behind: ``result.json`` (test scores of ``best.pt``) and how it is read back.

A run folder of a study holds the trainer's usual outputs plus ``result.json``, written after training by
:func:`sdnet.study.runner.execute_run`. The trainer itself also writes a small ``result.json`` at the end of
:meth:`~sdnet.training.Trainer.fit`; a study result is told apart by its ``schema`` key (:data:`RESULT_SCHEMA`),
and replaces the trainer's file, whose fields it keeps under ``training``.

``result.json`` (schema ``sdnet.study.run/1``)::

    {
      "schema": "sdnet.study.run/1",
      "name": "sdnet/l3/fold0",            # run folder, relative to the study folder
      "method": "sdnet", "label": "l3",    # label amount: "l<N>" (N subjects) or "f<F>" (fraction F)
      "labelled_subjects": 3,              # requested count (null for a fraction)
      "labelled_fraction": null,           # requested fraction (null for a count)
      "n_labelled_subjects": 3, "n_train_subjects": 70,   # what the split actually holds
      "fold": 0, "seed": 1, "protocol": "ssl4mis",
      "overrides": ["data.split=ssl4mis", ...],           # every override applied on top of the config file
      "method_overrides": [],
      "checkpoint": "best.pt",
      "class_names": ["RV", "MYO", "LV"],
      "steps": 812, "epochs": 8, "stop_reason": "max_minutes",
      "best_val_dice": 0.61, "best_epoch": 7,
      "train_time_s": 600.2, "eval_time_s": 4.1, "wall_time_s": 611.0, "num_threads": 2,
      "test": {
        "n_volumes": 40, "subjects": ["patient001", ...],
        "mean_dice_3d": 0.71, "mean_dice_slice": 0.66,           # mean over classes of the per-class means
        "dice_3d": {"RV": 0.6, ...}, "dice_slice": {...}, "hd95": {...},   # per-class means over volumes
        "hd95_unit": "px",
        "volumes": [{"subject": "patient001", "phase": 0,
                     "dice_3d": {"RV": 0.7, ...}, "dice_slice": {...}, "hd95": {...}}, ...]
      }
    }

Non-finite numbers (a class absent from both prediction and truth, an undefined HD95) are written as ``null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sdnet.errors import SDNetError
from sdnet.evaluation import EvaluationReport
from sdnet.outputs import write_text

RESULT_SCHEMA = "sdnet.study.run/1"
STUDY_SCHEMA = "sdnet.study/1"
DiceKind = Literal["3d", "slice"]


class StudyError(SDNetError):
    """A study cannot be planned, run or tabulated (unknown method, empty grid, bad run index, ...)."""


def finite_or_none(value: float) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def finite_mean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the finite entries of ``values`` (NaN when there are none), without numpy's empty-slice warning."""
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def finite_std(values: Sequence[float] | np.ndarray) -> float:
    """Population standard deviation (ddof 0, as :meth:`EvaluationReport.mean_std`) of the finite entries."""
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.std()) if a.size else float("nan")


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON atomically (:func:`sdnet.outputs.write_text`)."""
    write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


@dataclass(frozen=True)
class VolumeResult:
    """Test scores of one volume, per foreground class (NaN where undefined), and its modality (``""`` unknown)."""

    subject: str
    phase: int
    dice_3d: tuple[float, ...]
    dice_slice: tuple[float, ...]
    hd95: tuple[float, ...]
    modality: str = ""

    def dice(self, kind: DiceKind = "3d") -> tuple[float, ...]:
        return self.dice_3d if kind == "3d" else self.dice_slice

    def mean_dice(self, kind: DiceKind = "3d") -> float:
        """Average over the classes defined for this volume (NaN if none is)."""
        return finite_mean(self.dice(kind))


@dataclass(frozen=True)
class RunResult:
    """The contents of a study run's ``result.json`` (see the module docstring for the file layout)."""

    name: str
    method: str
    label: str
    labelled_subjects: int | None
    labelled_fraction: float | None
    n_labelled_subjects: int
    n_train_subjects: int
    fold: int
    seed: int
    protocol: str
    overrides: tuple[str, ...]
    method_overrides: tuple[str, ...]
    class_names: tuple[str, ...]
    volumes: tuple[VolumeResult, ...]
    hd95_unit: str = "px"
    checkpoint: str = "best.pt"
    steps: int = 0
    epochs: int = 0
    stop_reason: str = ""
    best_val_dice: float = float("nan")
    best_epoch: int = -1
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    wall_time_s: float = 0.0
    num_threads: int = 0

    def class_means(self, kind: DiceKind | Literal["hd95"] = "3d") -> tuple[float, ...]:
        """Per-class mean over volumes (NaN-aware)."""
        if not self.volumes:
            return tuple(float("nan") for _ in self.class_names)
        attr = {"3d": "dice_3d", "slice": "dice_slice", "hd95": "hd95"}[kind]
        m = np.array([getattr(v, attr) for v in self.volumes], dtype=float)
        return tuple(finite_mean(m[:, c]) for c in range(m.shape[1]))

    def mean_dice(self, kind: DiceKind = "3d") -> float:
        """Mean over classes of the per-class mean over volumes (as :meth:`EvaluationReport.mean_dice`)."""
        return finite_mean(self.class_means(kind))

    def to_dict(self) -> dict[str, Any]:
        names = self.class_names

        def per_class(values: Sequence[float]) -> dict[str, float | None]:
            return {n: finite_or_none(v) for n, v in zip(names, values, strict=True)}

        return {
            "schema": RESULT_SCHEMA,
            "name": self.name,
            "method": self.method,
            "label": self.label,
            "labelled_subjects": self.labelled_subjects,
            "labelled_fraction": self.labelled_fraction,
            "n_labelled_subjects": self.n_labelled_subjects,
            "n_train_subjects": self.n_train_subjects,
            "fold": self.fold,
            "seed": self.seed,
            "protocol": self.protocol,
            "overrides": list(self.overrides),
            "method_overrides": list(self.method_overrides),
            "checkpoint": self.checkpoint,
            "class_names": list(names),
            "steps": self.steps,
            "epochs": self.epochs,
            "stop_reason": self.stop_reason,
            "best_val_dice": finite_or_none(self.best_val_dice),
            "best_epoch": self.best_epoch,
            "train_time_s": round(self.train_time_s, 2),
            "eval_time_s": round(self.eval_time_s, 2),
            "wall_time_s": round(self.wall_time_s, 2),
            "num_threads": self.num_threads,
            "test": {
                "n_volumes": len(self.volumes),
                "subjects": sorted({v.subject for v in self.volumes}),
                "mean_dice_3d": finite_or_none(self.mean_dice("3d")),
                "mean_dice_slice": finite_or_none(self.mean_dice("slice")),
                "dice_3d": per_class(self.class_means("3d")),
                "dice_slice": per_class(self.class_means("slice")),
                "hd95": per_class(self.class_means("hd95")),
                "hd95_unit": self.hd95_unit,
                "volumes": [
                    {"subject": v.subject, "phase": v.phase, "dice_3d": per_class(v.dice_3d),
                     "dice_slice": per_class(v.dice_slice), "hd95": per_class(v.hd95),
                     **({"modality": v.modality} if v.modality else {})}
                    for v in self.volumes
                ],
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """Parse a study ``result.json``; raises :class:`StudyError` when it is not one."""
        if data.get("schema") != RESULT_SCHEMA:
            raise StudyError(f"not a study result (schema {data.get('schema')!r}, expected {RESULT_SCHEMA!r})")
        try:
            names = tuple(str(n) for n in data["class_names"])
            test = data["test"]

            def values(d: Mapping[str, Any]) -> tuple[float, ...]:
                return tuple(_nan(d.get(n)) for n in names)

            volumes = tuple(
                VolumeResult(subject=str(v["subject"]), phase=int(v["phase"]), dice_3d=values(v["dice_3d"]),
                             dice_slice=values(v["dice_slice"]), hd95=values(v.get("hd95") or {}),
                             modality=str(v.get("modality", "")))
                for v in test["volumes"]
            )
            frac = data.get("labelled_fraction")
            subjects = data.get("labelled_subjects")
            return cls(
                name=str(data["name"]), method=str(data["method"]), label=str(data["label"]),
                labelled_subjects=None if subjects is None else int(subjects),
                labelled_fraction=None if frac is None else float(frac),
                n_labelled_subjects=int(data["n_labelled_subjects"]), n_train_subjects=int(data["n_train_subjects"]),
                fold=int(data["fold"]), seed=int(data["seed"]), protocol=str(data["protocol"]),
                overrides=tuple(str(o) for o in data.get("overrides", ())),
                method_overrides=tuple(str(o) for o in data.get("method_overrides", ())),
                class_names=names, volumes=volumes, hd95_unit=str(test.get("hd95_unit", "px")),
                checkpoint=str(data.get("checkpoint", "best.pt")), steps=int(data.get("steps", 0)),
                epochs=int(data.get("epochs", 0)), stop_reason=str(data.get("stop_reason", "")),
                best_val_dice=_nan(data.get("best_val_dice")), best_epoch=int(data.get("best_epoch", -1)),
                train_time_s=float(data.get("train_time_s", 0.0)), eval_time_s=float(data.get("eval_time_s", 0.0)),
                wall_time_s=float(data.get("wall_time_s", 0.0)), num_threads=int(data.get("num_threads", 0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StudyError(f"malformed study result ({type(exc).__name__}: {exc})") from None

    def write(self, run_dir: str | Path, *, snapshot: int | None = None) -> Path:
        """Write ``result.json`` (or, for the snapshot at iteration ``snapshot``, ``result_s<N>.json``)."""
        path = Path(run_dir) / result_name(snapshot)
        write_json(path, self.to_dict())
        return path


def result_name(snapshot: int | None = None) -> str:
    """``result.json``: the run's scores (of ``best.pt``); ``result_s<N>.json``: those of the snapshot ``best_s<N>.pt``
    (``train.snapshot_steps``), the best checkpoint as it stood at iteration N."""
    return "result.json" if snapshot is None else f"result_s{int(snapshot)}.json"


def is_study_result(path: str | Path) -> bool:
    """True when ``path`` is a readable study ``result.json`` (not the trainer's own summary)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("schema") == RESULT_SCHEMA


def read_json_object(path: Path, *, what: str, missing: str = "missing") -> dict[str, Any]:
    """The JSON object in ``path``; :class:`StudyError` naming the file when it is ``missing``, not JSON or not
    an object (``what`` names the expected content)."""
    try:
        data = json.loads(path.read_text())
    except OSError:
        raise StudyError(f"{path}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise StudyError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise StudyError(f"{path}: not {what}")
    return data


def read_result(run_dir: str | Path, *, snapshot: int | None = None) -> RunResult:
    """Read a study run's ``result.json`` (``result_s<N>.json`` with ``snapshot=N``); :class:`StudyError` (naming
    the file) when missing or malformed."""
    path = Path(run_dir) / result_name(snapshot)
    data = read_json_object(path, what="a study result")
    try:
        return RunResult.from_dict(data)
    except StudyError as exc:
        raise StudyError(f"{path}: {exc}") from None


def volume_results(report: EvaluationReport) -> tuple[VolumeResult, ...]:
    """The per-volume scores of an evaluation report as :class:`VolumeResult`."""
    return tuple(
        VolumeResult(subject=v.subject_id, phase=int(v.phase), dice_3d=tuple(float(x) for x in v.dice_3d),
                     dice_slice=tuple(float(x) for x in v.dice_slice), hd95=tuple(float(x) for x in v.hd95),
                     modality=v.modality)
        for v in report.volumes
    )
