"""`sdnet experiment table`: rows per method and label amount, pooled mean ± std, bold best, paired t-test, figure."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

from sdnet.study import StudyGrid, build_table, labelled_subjects, plan_study, read_result, write_table

from .study_helpers import LABELLED, METHODS, TinyStudy, run_cli

CLASSES = ("RV", "MYO", "LV")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_table_of_the_tiny_grid(tiny_study: TinyStudy):
    res = run_cli(["experiment", "table", str(tiny_study.dir)])
    assert res.rc == 0, res.err
    for name in ("table.md", "table.csv", "dice_vs_labels.png"):
        assert (tiny_study.dir / name).stat().st_size > 0, name
    assert (tiny_study.dir / "dice_vs_labels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    all_rows = _csv_rows(tiny_study.dir / "table.csv")
    assert [r["metric"] for r in all_rows] == ["3d"] * (len(all_rows) // 2) + ["slice"] * (len(all_rows) // 2)
    rows = [r for r in all_rows if r["metric"] == "3d"]
    assert [(r["method"], r["labelled"]) for r in rows] == [(m, f"l{n}") for n in LABELLED for m in METHODS]
    assert all(r["runs_done"] == r["runs_expected"] == "2" and r["volumes"] == "4" for r in rows)
    for n in LABELLED:
        cell = [r for r in rows if r["labelled"] == f"l{n}"]
        assert sum(r["best"] == "1" for r in cell) == 1
        best = next(r for r in cell if r["best"] == "1")
        assert best["avg_mean"] == max((r["avg_mean"] for r in cell), key=float) and best["pairs"] == "4"
        assert best["compared_with"] in METHODS and best["compared_with"] != best["method"]
    # the CSV numbers are the pooled per-volume numbers of the runs' result.json files
    results = [read_result(tiny_study.dir / f"sdnet/l1/fold{k}") for k in range(2)]
    rv = [v.dice_3d[0] for r in results for v in r.volumes]
    avg = [v.mean_dice("3d") for r in results for v in r.volumes]
    first = rows[0]
    assert float(first["RV_mean"]) == pytest.approx(np.mean(rv), rel=1e-5)
    assert float(first["RV_std"]) == pytest.approx(np.std(rv), rel=1e-5, abs=1e-9)
    assert float(first["avg_mean"]) == pytest.approx(np.mean(avg), rel=1e-5)
    md = (tiny_study.dir / "table.md").read_text()
    assert md == res.out.split("wrote ")[0]
    assert "## 3D Dice" in md and "## Per-slice Dice (the authors' definition)" in md
    assert md.startswith("# Semi-supervised study") and md.index("## 3D Dice") < md.index("## Per-slice")
    for section in md.split("## ")[1:]:  # the same table layout for both definitions
        table_lines = [line for line in section.splitlines() if line.startswith("| ")]
        assert table_lines[0] == "| labelled | method | runs | volumes | RV | MYO | LV | avg | p (best vs 2nd) |"
        assert len(table_lines) == 1 + len(METHODS) * len(LABELLED)
        assert sum("**" in line for line in table_lines) == len(LABELLED)  # one bold average per label amount
    one = run_cli(["experiment", "table", str(tiny_study.dir), "--metric", "slice"])
    assert one.rc == 0, one.err
    assert "## " not in one.out and {r["metric"] for r in _csv_rows(tiny_study.dir / "table.csv")} == {"slice"}


def _volume(subject: str, phase: int, dice: np.ndarray) -> dict:
    per_class = {n: (None if np.isnan(d) else float(d)) for n, d in zip(CLASSES, dice, strict=True)}
    return {"subject": subject, "phase": phase, "dice_3d": per_class, "dice_slice": per_class, "hd95": {}}


def _write_result(study: Path, name: str, fold: int, volumes: list[dict]) -> None:
    """A result.json written by hand, following the schema documented in sdnet.study.results."""
    method, label, _ = name.split("/")
    data = {"schema": "sdnet.study.run/1", "name": name, "method": method, "label": label,
            "labelled_subjects": int(label[1:]), "labelled_fraction": None, "n_labelled_subjects": int(label[1:]),
            "n_train_subjects": 70, "fold": fold, "seed": 1, "protocol": "paper", "overrides": [],
            "class_names": list(CLASSES), "test": {"volumes": volumes}}
    (study / name).mkdir(parents=True, exist_ok=True)
    (study / name / "result.json").write_text(json.dumps(data))


def test_paired_ttest_equals_scipy_on_handmade_results(tmp_path: Path):
    methods = ["sdnet", "sdnet-noadv", "sdnet-nozrec"]
    plan = plan_study(config_path=None, methods=methods, labels=labelled_subjects([1, 3]), folds=2,
                      data_root=tmp_path)
    study = tmp_path / "study"
    plan.grid.write(study)
    rng = np.random.default_rng(0)
    keys = [(k, f"s{3 * k + i}", ph) for k in range(2) for i in range(3) for ph in (0, 1)]  # 12 test volumes
    base = rng.uniform(0.5, 0.8, size=(len(keys), 3))
    shift = {"sdnet": 0.05, "sdnet-noadv": 0.02, "sdnet-nozrec": 0.0}
    dice = {m: np.clip(base + shift[m] + rng.normal(0, 0.03, base.shape), 0, 1) for m in methods}
    dice["sdnet"][3, 0] = np.nan  # RV absent from prediction and truth in one volume: averaged over 2 classes
    for m in methods:
        for label in ("l1", "l3"):
            if label == "l3" and m == "sdnet-nozrec":
                continue  # a cell without any finished run
            for k in range(2):
                if label == "l3" and m == "sdnet-noadv" and k == 1:
                    continue  # a cell with one run missing
                vols = [_volume(s, ph, dice[m][i]) for i, (f, s, ph) in enumerate(keys) if f == k]
                if m == "sdnet-noadv":
                    vols.reverse()  # pairing is by volume id, not by position
                _write_result(study, f"{m}/{label}/fold{k}", k, vols)
    (study / "sdnet-nozrec/l3/fold1").mkdir(parents=True)
    (study / "sdnet-nozrec/l3/fold1/result.json").write_text("{not json")  # unreadable: counted as missing

    table = build_table(study)
    avg = {m: np.nanmean(dice[m], axis=1) for m in methods}
    l1 = {r.method: r for r in table.rows if r.label.key == "l1"}
    assert l1["sdnet"].best and not l1["sdnet-noadv"].best and l1["sdnet"].compared_with == "sdnet-noadv"
    expected = ttest_rel(avg["sdnet"], avg["sdnet-noadv"]).pvalue
    assert l1["sdnet"].p_value == pytest.approx(expected, rel=1e-10) and l1["sdnet"].n_pairs == 12
    assert l1["sdnet-noadv"].p_value is None
    assert l1["sdnet"].class_mean[0] == pytest.approx(np.nanmean(dice["sdnet"][:, 0]))
    assert l1["sdnet"].class_std[0] == pytest.approx(np.nanstd(dice["sdnet"][:, 0]))
    assert l1["sdnet"].avg_mean == pytest.approx(avg["sdnet"].mean())
    assert l1["sdnet"].avg_std == pytest.approx(avg["sdnet"].std())
    l3 = {r.method: r for r in table.rows if r.label.key == "l3"}
    fold0 = [i for i, key in enumerate(keys) if key[0] == 0]
    assert l3["sdnet"].best and l3["sdnet"].n_pairs == len(fold0)
    assert l3["sdnet"].p_value == pytest.approx(ttest_rel(avg["sdnet"][fold0], avg["sdnet-noadv"][fold0]).pvalue)
    assert l3["sdnet-noadv"].runs_done == ("sdnet-noadv/l3/fold0",) and l3["sdnet-nozrec"].runs_done == ()

    files = write_table(study)
    md = files.markdown.read_text()
    assert "| 3 subjects | sdnet-nozrec | 0/2 | — | — | — | — | — | |" in md
    index = {spec.name: spec.index for spec in StudyGrid.read(study).runs}
    assert (f"sdnet-noadv, 3 subjects: 1 of 2 runs missing (sdnet-noadv/l3/fold1 (run "
            f"{index['sdnet-noadv/l3/fold1']}))") in md  # the run index: resubmit it as a job-array task
    assert (f"sdnet-nozrec, 3 subjects: no finished runs (2 expected: sdnet-nozrec/l3/fold0 (run "
            f"{index['sdnet-nozrec/l3/fold0']}), sdnet-nozrec/l3/fold1 (run {index['sdnet-nozrec/l3/fold1']}))") in md
    star = "\\*" if l1["sdnet"].p_value < 0.05 else ""
    assert f"**{l1['sdnet'].avg_mean:.3f} ± {l1['sdnet'].avg_std:.3f}**{star} | {l1['sdnet'].p_value:.3g} (vs " \
           "sdnet-noadv, 12 pairs) |" in md
    rows = [r for r in _csv_rows(files.csv) if r["metric"] == "3d"]
    assert rows[0]["method"] == "sdnet" and float(rows[0]["p_value"]) == pytest.approx(expected, rel=1e-5)
    nozrec = next(r for r in rows if r["method"] == "sdnet-nozrec" and r["labelled"] == "l3")
    assert nozrec["avg_mean"] == "" and nozrec["missing_runs"] == "sdnet-nozrec/l3/fold0 sdnet-nozrec/l3/fold1"
    assert files.figure.read_bytes()[:4] == b"\x89PNG"


def test_table_of_a_study_without_results(tmp_path: Path):
    plan = plan_study(config_path=None, methods=["sdnet"], labels=labelled_subjects([1]), data_root=tmp_path)
    plan.grid.write(tmp_path / "empty")
    res = run_cli(["experiment", "table", str(tmp_path / "empty")])
    assert res.rc == 0, res.err
    assert "no finished runs yet." in res.out and "| 1 subject | sdnet | 0/3 | — |" in res.out
    assert (tmp_path / "empty" / "dice_vs_labels.png").exists()
    missing = run_cli(["experiment", "table", str(tmp_path / "nowhere")])
    assert missing.rc == 2 and missing.err.startswith("sdnet: error:") and "study.json" in missing.err


def test_paired_differences_against_the_reference_method(tmp_path: Path):
    """Every method against the reference per label amount: mean difference and ttest_rel on common volumes."""
    methods = ["unet", "sdnet", "gan"]
    plan = plan_study(config_path=None, methods=methods, labels=labelled_subjects([1]), folds=1, data_root=tmp_path)
    study = tmp_path / "study"
    plan.grid.write(study)
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.7, (10, 3))
    dice = {"unet": base, "sdnet": np.clip(base + 0.1 + rng.normal(0, 0.02, base.shape), 0, 1),
            "gan": np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)}
    for m in methods:
        vols = [_volume(f"s{i}", 0, dice[m][i]) for i in range(10)]
        if m == "gan":
            vols = vols[:7]  # three volumes missing: compared on the seven common ones
        _write_result(study, f"{m}/l1/fold0", 0, vols)
    from sdnet.study import reference_comparisons

    comparisons = {c.method: c for c in reference_comparisons(build_table(study), "unet")}
    assert set(comparisons) == {"sdnet", "gan"}
    avg = {m: dice[m].mean(axis=1) for m in methods}
    sd = comparisons["sdnet"]
    assert sd.difference == pytest.approx(avg["sdnet"].mean() - avg["unet"].mean())
    assert sd.p_value == pytest.approx(ttest_rel(avg["sdnet"], avg["unet"]).pvalue) and sd.n_pairs == 10
    assert comparisons["gan"].n_pairs == 7
    assert comparisons["gan"].p_value == pytest.approx(ttest_rel(avg["gan"][:7], avg["unet"][:7]).pvalue)
    assert reference_comparisons(build_table(study), "selftrain") == []  # not in the grid
    md = write_table(study).markdown.read_text()
    assert "Paired differences against `unet`" in md
    assert f"| 1 subject | sdnet | {sd.mean:.3f} | {sd.reference_mean:.3f} | {sd.difference:+.3f} |" in md
