"""`sdnet experiment semi`: the grid, its run folders and result.json, skipping, resuming, one run of an array."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sdnet.config import load_config
from sdnet.data.pipeline import prepare_data
from sdnet.data.splits import Split
from sdnet.study import RESULT_SCHEMA, StudyError, labelled_subjects, plan_study, read_result, run_study

from .study_helpers import FOLDS, LABELLED, METHODS, TinyStudy, run_cli, semi_argv

N_RUNS = len(METHODS) * len(LABELLED) * FOLDS
NAMES = [f"{m}/l{n}/fold{k}" for m in METHODS for n in LABELLED for k in range(FOLDS)]


def _lines(out: str, kind: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[") and f"] {kind} " in line]


def test_grid_writes_every_run_folder_and_result(tiny_study: TinyStudy):
    out = tiny_study.first.out
    assert len(_lines(out, "started")) == N_RUNS and len(_lines(out, "finished")) == N_RUNS
    assert f"{N_RUNS} finished, 0 skipped, 0 failed" in out
    study = json.loads((tiny_study.dir / "study.json").read_text())
    assert [r["name"] for r in study["runs"]] == NAMES and [r["index"] for r in study["runs"]] == list(range(8))
    assert study["protocol"] == "paper" and study["folds"] == [0, 1] and study["method_overrides"]["sdnet-noadv"] == [
        "loss.adv=0"]
    for name in NAMES:
        run = tiny_study.dir / name
        for f in ("config.yaml", "split.json", "log.jsonl", "best.pt", "last.pt", "result.json"):
            assert (run / f).exists(), (name, f)
        raw = json.loads((run / "result.json").read_text())
        assert raw["schema"] == RESULT_SCHEMA and raw["name"] == name and raw["steps"] == 2
        result = read_result(run)
        method, label, fold = name.split("/")
        assert (result.method, result.label, f"fold{result.fold}") == (method, label, fold)
        assert result.labelled_subjects == result.n_labelled_subjects == int(label[1:])
        assert result.class_names == ("RV", "MYO", "LV") and len(result.volumes) == 2  # 1 test subject, ED + ES
        assert set(raw["test"]["dice_3d"]) == {"RV", "MYO", "LV"} and raw["test"]["n_volumes"] == 2
        assert all(0 <= d <= 1 for v in result.volumes for d in v.dice_3d + v.dice_slice)
        assert result.wall_time_s > 0 and result.num_threads == 1
        assert result.overrides[-1 if method == "sdnet" else -2] == f"train.seed={result.seed}"
        assert ("loss.adv=0" in result.overrides) == (method == "sdnet-noadv")
        cfg = load_config(run / "config.yaml")
        assert cfg.data.fold == result.fold and cfg.data.labelled_subjects == int(label[1:])
        assert cfg.loss.adv == (0.0 if method == "sdnet-noadv" else 10.0)


def test_splits_never_leak_between_pools_and_test(tiny_study: TinyStudy):
    splits = {name: Split.from_json(tiny_study.dir / name / "split.json") for name in NAMES}
    for name, split in splits.items():
        assert set(split.labelled) <= set(split.train)
        assert not set(split.train) & set(split.test) and not set(split.val) & set(split.test)
        assert not set(split.train) & set(split.val)
        assert sorted({v.subject for v in read_result(tiny_study.dir / name).volumes}) == sorted(split.test)
    for n in LABELLED:
        for k in range(FOLDS):  # every method sees the same split for the same cell (a fair, paired comparison)
            assert len({json.dumps(splits[f"{m}/l{n}/fold{k}"].to_dict()) for m in METHODS}) == 1
    tests = [set(splits[f"sdnet/l1/fold{k}"].test) for k in range(FOLDS)]
    assert not tests[0] & tests[1]  # folds have disjoint test sets
    for k in range(FOLDS):  # more labels add subjects, never swap them
        assert set(splits[f"sdnet/l1/fold{k}"].labelled) < set(splits[f"sdnet/l2/fold{k}"].labelled)
    # what the trainer actually feeds: labelled slices from labelled subjects only, no test subject anywhere
    for name in NAMES[: len(LABELLED) * FOLDS]:
        cfg = load_config(tiny_study.dir / name / "config.yaml")
        split = splits[name]
        data = prepare_data(cfg.data, image_size=cfg.model.image_size, n_classes=cfg.model.n_classes, split=split)
        assert set(data.labelled.subject_ids) <= set(split.labelled)
        assert data.unlabelled is not None
        assert set(data.unlabelled.subject_ids) <= set(split.train)
        assert not set(data.unlabelled.subject_ids) & set(split.test)
        assert set(data.real_masks.subject_ids) == set(split.train)  # all training masks, unpaired (default)
        assert not set(data.real_masks.subject_ids) & (set(split.val) | set(split.test))
        assert {v.subject_id for v in data.test} == set(split.test)


def test_rerun_skips_finished_runs(tiny_study: TinyStudy):
    mtimes = {n: (tiny_study.dir / n / "result.json").stat().st_mtime_ns for n in NAMES}
    again = run_cli(tiny_study.argv)
    assert again.rc == 0, again.err
    assert len(_lines(again.out, "skipped")) == N_RUNS and not _lines(again.out, "started")
    assert f"0 finished, {N_RUNS} skipped, 0 failed" in again.out
    assert mtimes == {n: (tiny_study.dir / n / "result.json").stat().st_mtime_ns for n in NAMES}


def test_interrupted_runs_are_resumed_or_only_evaluated(tiny_study: TinyStudy, tiny_phantom: Path,
                                                        study_config: Path, tmp_path: Path):
    study = tmp_path / "copy"
    shutil.copytree(tiny_study.dir, study)
    argv = semi_argv(study_config, tiny_phantom, study)
    killed, unevaluated = study / NAMES[0], study / NAMES[1]
    (killed / "result.json").unlink()  # last.pt but no result: resume
    log_before = (killed / "log.jsonl").read_text()
    (unevaluated / "result.json").write_text(json.dumps({"steps": 2, "epochs": 1, "best_val_dice": 0.5,
                                                         "best_epoch": 1, "stop_reason": "epochs"}))
    best_mtime = (unevaluated / "best.pt").stat().st_mtime_ns
    res = run_cli(argv)
    assert res.rc == 0, res.err
    assert [line.split("]")[1].split(":")[0].strip() for line in _lines(res.out, "resumed")] == [
        f"resumed {NAMES[0]}"]
    assert len(_lines(res.out, "evaluating")) == 1 and NAMES[1] in _lines(res.out, "evaluating")[0]
    assert f"2 finished, {N_RUNS - 2} skipped" in res.out
    assert read_result(killed).steps == 2 and (killed / "log.jsonl").read_text() == log_before
    assert read_result(unevaluated).best_val_dice == 0.5 and (unevaluated / "best.pt").stat().st_mtime_ns == best_mtime
    # a run folder trained with other settings is refused, not mixed in
    res = run_cli([*argv, "--set", "optim.lr=0.5"])
    assert res.rc == 2 and res.err.startswith("sdnet: error:") and "optim.lr" in res.err and "--out" in res.err


def test_run_index_runs_exactly_one_run(tiny_phantom: Path, study_config: Path, tmp_path: Path):
    out = tmp_path / "array"
    dry = run_cli(semi_argv(study_config, tiny_phantom, out, "--dry-run"))
    assert dry.rc == 0 and not out.exists()
    rows = [line.split() for line in dry.out.splitlines()[:-1]]
    assert [(int(r[0]), r[1], r[2]) for r in rows] == [(i, n, "new") for i, n in enumerate(NAMES)]
    res = run_cli(semi_argv(study_config, tiny_phantom, out, "--run-index", "5"))
    assert res.rc == 0, res.err
    assert _lines(res.out, "started") == [f"[6/8] started {NAMES[5]}: 1 threads"]
    assert [p.parent.relative_to(out).as_posix() for p in out.rglob("result.json")] == [NAMES[5]]
    assert len(json.loads((out / "study.json").read_text())["runs"]) == N_RUNS
    bad = run_cli(semi_argv(study_config, tiny_phantom, out, "--run-index", "8"))
    assert bad.rc == 2 and "--run-index 8 is out of range" in bad.err and "Traceback" not in bad.err


def test_fractions_and_ssl4mis_grid_names(tiny_phantom: Path, study_config: Path, tmp_path: Path):
    argv = ["experiment", "semi", "--config", str(study_config), "--data", str(tiny_phantom), "--out",
            str(tmp_path / "s"), "--methods", "sdnet,sdnet-nozrec,sdnet-nobin", "--fractions", "0.5,1", "--folds",
            "1", "--seeds", "2", "--dry-run"]
    res = run_cli(argv)
    assert res.rc == 0, res.err
    names = [line.split()[1] for line in res.out.splitlines()[:-1]]
    assert names[:4] == ["sdnet/f0.5/fold0-seed0", "sdnet/f0.5/fold0-seed1", "sdnet/f1/fold0-seed0",
                         "sdnet/f1/fold0-seed1"] and len(names) == 12
    assert "data.labelled_subjects=0 data.labelled_fraction=0.5 data.fold=0 train.seed=0 loss.zrec=0" in res.out
    assert "model.binarisation=none" in res.out


@pytest.mark.parametrize(("extra", "needle"), [
    (["--methods", "sdnet,nope"], "unknown method(s) nope"),
    (["--folds", "0"], "empty grid"),
    (["--labelled", "0"], "labelled subjects must be >= 1"),
    (["--fractions", "1.5"], "labelled fraction must lie in (0, 1]"),
    (["--set", "data.fold=1"], "data.fold is decided by the study grid"),
    (["--protocol", "ssl4mis", "--folds", "2"], "one fixed split"),
    (["--set", "train.nope=1"], "train.nope"),
    (["--jobs", "0"], "--jobs must be >= 1"),
])
def test_bad_input_is_one_clean_error(tiny_phantom: Path, study_config: Path, tmp_path: Path, extra: list[str],
                                      needle: str):
    base = ["experiment", "semi", "--config", str(study_config), "--data", str(tiny_phantom), "--out",
            str(tmp_path / "s")]
    defaults = {"--methods": "sdnet", "--labelled": "1"}
    for flag, value in defaults.items():
        if flag not in extra and not (flag == "--labelled" and "--fractions" in extra):
            base += [flag, value]
    res = run_cli([*base, *extra])
    lines = [line for line in res.err.splitlines() if line]
    assert res.rc == 2 and len(lines) == 1 and lines[0].startswith("sdnet: error:"), res.err
    assert needle in lines[0], res.err
    assert not list((tmp_path / "s").rglob("*.pt"))


def test_library_errors_without_cli(tiny_phantom: Path):
    with pytest.raises(StudyError, match="empty grid"):
        plan_study(config_path=None, methods=[], labels=labelled_subjects([1]), data_root=tiny_phantom)
    with pytest.raises(StudyError, match="no dataset"):
        plan_study(config_path=None, methods=["sdnet"], labels=labelled_subjects([1]))
    plan = plan_study(config_path=None, methods=["sdnet"], labels=labelled_subjects([1]), data_root=tiny_phantom)
    assert [r.name for r in plan.runs] == ["sdnet/l1/fold0", "sdnet/l1/fold1", "sdnet/l1/fold2"]
    with pytest.raises(StudyError, match="out of range"):
        run_study(plan, "unused", run_index=-1)


@pytest.mark.slow
def test_parallel_jobs_in_spawned_processes(tiny_phantom: Path, study_config: Path, tmp_path: Path):
    """Two runs at a time, each in its own spawned process (slow: each child imports torch afresh)."""
    plan = plan_study(config_path=study_config, methods=["sdnet"], labels=labelled_subjects([1]), folds=2,
                      data_root=tiny_phantom)
    events: list[str] = []
    summary = run_study(plan, tmp_path / "par", jobs=2, with_hd95=False, on_event=lambda e: events.append(e.kind))
    assert summary.ok and len(summary.finished) == 2, summary.failed
    assert events.count("started") == 2 and events.count("finished") == 2
    assert all(read_result(tmp_path / "par" / r.name).steps == 2 for r in plan.runs)


def test_snapshots_are_scored_and_tabled(tiny_phantom: Path, study_config: Path, tmp_path: Path):
    """train.snapshot_steps: the run's snapshot is scored into result_s<N>.json (before result.json) and `table
    --snapshot N` makes the table of the snapshots."""
    out = tmp_path / "snap"
    extra = ("--set", "train.epochs=2", "--set", "train.snapshot_steps=2", "--run-index", "0")
    res = run_cli(semi_argv(study_config, tiny_phantom, out, *extra))
    assert res.rc == 0, res.err
    run = out / NAMES[0]
    snap, final = read_result(run, snapshot=2), read_result(run)
    assert (snap.checkpoint, snap.steps, snap.stop_reason, snap.epochs) == ("best_s2.pt", 2, "snapshot", 1)
    assert 0 < snap.train_time_s <= final.train_time_s and final.epochs == 2
    assert (final.checkpoint, final.steps) == ("best.pt", 4)
    assert snap.best_epoch == 1 and snap.best_val_dice == json.loads(
        next(line for line in (run / "log.jsonl").read_text().splitlines() if '"event": "epoch"' in line))["val_dice"]
    assert [v.subject for v in snap.volumes] == [v.subject for v in final.volumes]
    table = run_cli(["experiment", "table", str(out), "--snapshot", "2", "--metric", "3d"])
    assert table.rc == 0, table.err
    md = (out / "table_s2.md").read_text()
    assert "at iteration 2" in md and f"{snap.mean_dice('3d'):.3f}" in md and (out / "table_s2.csv").exists()
    assert not (out / "table.md").exists()
    missing = run_cli(["experiment", "table", str(out), "--snapshot", "3"])  # no run has that snapshot
    assert missing.rc == 0 and "no finished runs" in (out / "table_s3.md").read_text()
