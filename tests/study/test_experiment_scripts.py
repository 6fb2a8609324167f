"""experiments/paired_tests.py and experiments/cross_table.py on hand-made results of two studies (two budgets)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("RV", "MYO", "LV")
SEEDS = (1, 2, 3)
VOLUMES = [(f"patient{i:03d}", ph) for i in range(1, 9) for ph in (0, 1)]  # 16 test volumes


def _write_run(cell: Path, seed: int, dice: np.ndarray, slice_dice: np.ndarray, file: str = "result.json") -> None:
    """One run's study result.json (the schema of sdnet.study.results), volumes in reverse order on odd seeds."""
    method, label = cell.parent.name, cell.name
    volumes = [{"subject": s, "phase": ph, "dice_3d": dict(zip(CLASSES, map(float, dice[i]), strict=True)),
                "dice_slice": dict(zip(CLASSES, map(float, slice_dice[i]), strict=True)), "hd95": {}}
               for i, (s, ph) in enumerate(VOLUMES)]
    if seed % 2:
        volumes.reverse()  # pairing is by (seed, subject, phase), not by position
    run = cell / f"fold0-seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    data = {"schema": "sdnet.study.run/1", "name": f"{method}/{label}/{run.name}", "method": method, "label": label,
            "labelled_subjects": int(label[1:]), "labelled_fraction": None, "n_labelled_subjects": int(label[1:]),
            "n_train_subjects": 70, "fold": 0, "seed": seed, "protocol": "ssl4mis", "overrides": [],
            "class_names": list(CLASSES), "test": {"volumes": volumes}}
    (run / file).write_text(json.dumps(data))


@pytest.fixture()
def two_studies(tmp_path: Path) -> dict[str, dict[int, np.ndarray]]:
    """long/gan/l3 and short/plus/l3, 3 seeds each; plus is 0.05 better on average with noise; returns the
    per-volume class averages (3D) per cell and seed."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, size=(len(VOLUMES), 3))
    averages: dict[str, dict[int, np.ndarray]] = {"plus": {}, "gan": {}}
    for study, method, shift in (("long", "gan", 0.0), ("short", "plus", 0.05)):
        for seed in SEEDS:
            dice = np.clip(base + shift + rng.normal(0, 0.05, base.shape), 0, 1)
            _write_run(tmp_path / study / method / "l3", seed, dice, dice * 0.9)
            averages[method][seed] = dice.mean(axis=1)
            if method == "gan":  # its snapshot at iteration 2000 (train.snapshot_steps): about 0.1 lower
                early = dice - 0.1 + rng.normal(0, 0.01, base.shape)
                _write_run(tmp_path / study / method / "l3", seed, early, early, file="result_s2000.json")
                averages.setdefault("gan@2000", {})[seed] = early.mean(axis=1)
    return averages


def _script(name: str, *args: str, cwd: Path) -> str:
    """Run experiments/<name> in this process (its main() with argv, in ``cwd``) and return what it printed."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        module = importlib.import_module(name.removesuffix(".py"))
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    out = io.StringIO()
    with _in(cwd, [name, *args]), contextlib.redirect_stdout(out):
        module.main()
    return out.getvalue()


@contextlib.contextmanager
def _in(cwd: Path, argv: list[str]) -> Iterator[None]:
    """Working directory and sys.argv for a script's main() (contextlib.chdir needs Python 3.11)."""
    saved = sys.argv, Path.cwd()
    sys.argv = argv
    os.chdir(cwd)
    try:
        yield
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])


def test_paired_tests_pools_seeds_across_two_studies(tmp_path: Path, two_studies):
    trained = tmp_path / "short" / "plus" / "l3" / "fold0-seed4"  # trained, not yet scored: the trainer's summary
    trained.mkdir()
    (trained / "result.json").write_text(json.dumps({"method": "sdnet", "steps": 2000}))
    out = _script("paired_tests.py", "short/plus/l3:long/gan/l3", cwd=tmp_path)
    plus, gan = two_studies["plus"], two_studies["gan"]
    pooled = ttest_rel(np.concatenate([plus[s] for s in SEEDS]), np.concatenate([gan[s] for s in SEEDS])).pvalue
    volumes = ttest_rel(np.mean([plus[s] for s in SEEDS], axis=0), np.mean([gan[s] for s in SEEDS], axis=0)).pvalue
    difference = np.mean([plus[s] - gan[s] for s in SEEDS])
    match = re.search(r"\[3d\]: ([+-][\d.]+) .*pooled p = ([\d.e+-]+) \((\d+) pairs\); volumes p = ([\d.e+-]+) "
                      r"\((\d+) seed-averaged\); per seed: s1 ([+-][\d.]+), s2 ([+-][\d.]+), s3 ([+-][\d.]+)", out)
    assert match, out
    assert float(match[1]) == pytest.approx(difference, abs=5e-4)
    assert float(match[2]) == pytest.approx(pooled, rel=0.05) and match[3] == str(3 * len(VOLUMES))
    assert float(match[4]) == pytest.approx(volumes, rel=0.05) and match[5] == str(len(VOLUMES))
    for k, seed in enumerate(SEEDS):
        assert float(match[6 + k]) == pytest.approx(np.mean(plus[seed] - gan[seed]), abs=5e-4)
    # the same cells named relative to a study folder, and one run folder against another
    relative = _script("paired_tests.py", str(tmp_path / "short"), f"plus/l3:{tmp_path}/long/gan/l3", cwd=ROOT)
    assert relative.split(": ", 1)[1] == out.split(": ", 1)[1]
    one = _script("paired_tests.py", "short/plus/l3/fold0-seed2:long/gan/l3/fold0-seed2", "--metric", "slice",
                  cwd=tmp_path)
    assert "[slice]" in one and "(16 pairs)" in one and "per seed: s2 " in one


def test_cross_table_rows_against_the_reference(tmp_path: Path, two_studies):
    out = _script("cross_table.py", "--reference", "GAN=long/gan", "SDNet+=short/plus", "absent=short/none",
                  "--out", "t.md", cwd=tmp_path)
    assert (tmp_path / "t.md").read_text() in out
    plus, gan = two_studies["plus"], two_studies["gan"]
    mean_plus = np.mean([plus[s] for s in SEEDS])
    row = next(line for line in out.splitlines() if line.startswith("| SDNet+ |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "3" and cells[3] == f"{mean_plus:.3f}"
    assert cells[5].startswith(f"{np.mean([plus[s] - gan[s] for s in SEEDS]):+.3f} (p = ")
    assert "| absent | 0 | (not run yet) |" in out
    assert "### 3 labelled patients" in out


def test_snapshot_cells(tmp_path: Path, two_studies):
    out = _script("paired_tests.py", "long/gan/l3:long/gan/l3@2000", cwd=tmp_path)
    gan, early = two_studies["gan"], two_studies["gan@2000"]
    seeds = ", ".join(f"s{s} {np.mean(gan[s] - early[s]):+.3f}" for s in SEEDS)
    assert f"[3d]: {np.mean([gan[s] - early[s] for s in SEEDS]):+.3f} (" in out and f"per seed: {seeds}" in out
    table = _script("cross_table.py", "--reference", "GAN 2000=long/gan@2000", "GAN=long/gan",
                    "SDNet+ 2000=short/plus@2000", cwd=tmp_path)
    row = next(line for line in table.splitlines() if line.startswith("| GAN |"))
    assert f"| {np.mean([gan[s] - early[s] for s in SEEDS]):+.3f} (p = " in row
    assert "| SDNet+ 2000 | 0 | (not run yet) |" in table  # plus has no snapshot


def test_study_curves_flatness_and_budgets(tmp_path: Path):
    """study_curves on a committed-style copy: the flatness table from epochs.jsonl, the test Dice per budget from
    result.json and the snapshots' result_s<N>.json, the figure; --no-copy writes nothing else."""
    for seed, (rise, test) in enumerate(((0.3, 0.70), (0.1, 0.80)), start=1):
        run = tmp_path / "runs" / "gan" / "l3" / f"fold0-seed{seed}"
        run.mkdir(parents=True)
        epochs = [{"event": "epoch", "step": 100 * k, "val_dice": 0.3 + rise * min(k, 40) / 40} for k in range(1, 61)]
        (run / "epochs.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
        for steps, name, mean in ((6000, "result.json", test), (2000, "result_s2000.json", test - 0.1)):
            (run / name).write_text(json.dumps({"schema": "sdnet.study.run/1", "steps": steps,
                                                "test": {"mean_dice_3d": mean}}))
    out = _script("study_curves.py", str(tmp_path / "runs"), "--out", str(tmp_path / "fig" / "x"), "--no-copy",
                  cwd=tmp_path)
    # middle third (2100-4000) vs last third (4100-6000): the curves rise until 4000, then stay
    middle = np.mean([np.mean([0.3 + r * min(k, 40) / 40 for k in range(21, 41)]) for r in (0.3, 0.1)])
    assert f"| gan | 3 | 2 | 6000 | {middle:.3f} | {0.3 + 0.2:.3f} | {0.5 - middle:+.3f} | 4000, 4000 |" in out
    assert "| gan | 3 | 0.650 (2) | 0.750 (2) |" in out and "2000 it. | 6000 it." in out
    assert (tmp_path / "fig" / "x_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "fig" / "x_runs").exists()
