"""Executing a study plan (:mod:`sdnet.study.grid`): one training run per grid cell, side by side or one by index.

Each run trains with :class:`~sdnet.training.Trainer` and, after training, writes ``result.json``: the scores of
``best.pt`` on the run's *test* subjects only (:mod:`sdnet.study.results`).

Runs are restartable: a run whose ``result.json`` is a study result is skipped; a run folder with ``last.pt`` but
no result is resumed (:meth:`Trainer.resume <sdnet.training.Trainer.resume>`); a finished training whose
evaluation was interrupted is only evaluated. A folder trained with other settings is refused, never mixed in.
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
from typing import Any, Literal

from sdnet.checkpoint import load_checkpoint
from sdnet.config import ConfigError, RunConfig, load_config, to_dict
from sdnet.data.pipeline import PreparedVolume
from sdnet.errors import SDNetError
from sdnet.evaluation import evaluate_checkpoint
from sdnet.study.grid import (
    PLACE_KEYS,
    RunSpec,
    RunState,
    StudyPlan,
)
from sdnet.study.results import (
    RunResult,
    StudyError,
    is_study_result,
    result_name,
    volume_results,
)
from sdnet.training import Trainer

EventKind = Literal["started", "resumed", "evaluating", "finished", "skipped", "failed"]


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
    test subjects; ``eval_test/`` gets the usual ``per_volume.csv`` and ``summary.md``. Each snapshot of
    ``train.snapshot_steps`` (``best_s<N>.pt``) is scored too, into ``result_s<N>.json``, before ``result.json``.
    """
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
    # the snapshots first: result.json marks the run done, so it is written last
    for n in config.train.snapshots():
        snapshot = run_dir / f"best_s{n}.pt"
        if not snapshot.exists() or is_study_result(run_dir / result_name(n)):
            continue  # not taken (see Trainer._snapshot), or scored before an interruption
        at = _snapshot_record(snapshot, n)
        _score(spec, config, snapshot, at, volumes, with_hd95, time.perf_counter()).write(run_dir, snapshot=n)
    result = _score(spec, config, run_dir / "best.pt", training, volumes, with_hd95, t0)
    result.write(run_dir)
    return RunOutcome(spec=spec, status="finished", state=state, result=result)


def _snapshot_record(snapshot: Path, n: int) -> dict[str, Any]:
    """Where training stood at iteration ``n``: the trainer's ``best_s<N>.json``; for snapshots written before it
    existed (commit 2fff05f), what the checkpoint holds — its ``epochs`` and time are then those of the best epoch."""
    sidecar = snapshot.with_suffix(".json")
    if sidecar.exists():
        record = json.loads(sidecar.read_text())
        return {"steps": n, "epochs": int(record["epochs"]), "best_val_dice": record["best_val_dice"],
                "best_epoch": int(record["best_epoch"]), "stop_reason": "snapshot",
                "elapsed_s": float(record["elapsed_s"])}
    saved = load_checkpoint(snapshot)
    return {"steps": n, "epochs": int(saved["epoch"]), "best_val_dice": saved["best_val"],
            "best_epoch": int(saved["best_epoch"]), "stop_reason": "snapshot", "elapsed_s": float(saved["elapsed"])}


def _score(spec: RunSpec, config: RunConfig, checkpoint: Path, training: Mapping[str, Any],
           volumes: Sequence[PreparedVolume] | None, with_hd95: bool, t0: float) -> RunResult:
    """The test scores of ``checkpoint`` as a study result; ``best.pt``'s evaluation report goes to ``eval_test/``.
    ``wall_time_s`` counts from ``t0``: the whole of :func:`execute_run` for ``best.pt``, the scoring alone for a
    snapshot (``train_time_s`` is then the training time when the snapshot was taken)."""
    t_eval = time.perf_counter()
    evaluation = evaluate_checkpoint(checkpoint, volumes=volumes, data_root=config.data.root,
                                     device=config.train.device, with_hd95=with_hd95)
    if checkpoint.name == "best.pt":
        evaluation.report.write(checkpoint.parent / "eval_test", title=f"{spec.name}: test evaluation of best.pt")
    eval_time = time.perf_counter() - t_eval
    split = evaluation.split
    best_val = training.get("best_val_dice")
    return RunResult(
        name=spec.name, method=spec.method, label=spec.label.key,
        labelled_subjects=spec.label.subjects or None, labelled_fraction=spec.label.fraction or None,
        n_labelled_subjects=len(split.labelled), n_train_subjects=len(split.train), fold=spec.fold, seed=spec.seed,
        protocol=spec.protocol, overrides=spec.overrides, method_overrides=spec.method_overrides,
        class_names=tuple(evaluation.report.class_names), volumes=volume_results(evaluation.report),
        hd95_unit=evaluation.report.hd95_unit, checkpoint=checkpoint.name, steps=int(training.get("steps", 0)),
        epochs=int(training.get("epochs", 0)), stop_reason=str(training.get("stop_reason", "")),
        best_val_dice=math.nan if best_val is None else float(best_val),
        best_epoch=int(training.get("best_epoch", -1)), train_time_s=float(training.get("elapsed_s", 0.0)),
        eval_time_s=eval_time, wall_time_s=time.perf_counter() - t0, num_threads=config.train.num_threads,
    )


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
