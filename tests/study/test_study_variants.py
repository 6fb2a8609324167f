"""Variant studies on the runner: modality mixtures (paper Table 3) and factor sizes (§5.6), on the tiny phantom."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdnet.study import StudyError, StudyGrid
from sdnet.study.variants import factor_variants, mixture_name, mixture_variants

from .study_helpers import run_cli

RUNNER = ["--protocol", "paper", "--folds", "1", "--set", "train.max_steps=2", "--set", "data.use_unlabelled=false"]


def test_variant_names_and_overrides():
    assert mixture_name("MR:1,CT:0.125") == "MR1-CT0.125"
    assert mixture_variants(["MR:1, CT:0"]) == {"MR1-CT0": ('data.modality_mix="MR:1,CT:0"',)}
    assert factor_variants([4], [8, 16]) == {"C4-nz8": ("model.anatomy_channels=4", "model.n_z=8"),
                                              "C4-nz16": ("model.anatomy_channels=4", "model.n_z=16")}
    for bad in ("MR=1", "MR:2", "MR:x"):
        with pytest.raises(StudyError, match="MODALITY:FRACTION"):
            mixture_name(bad)
    with pytest.raises(StudyError, match="duplicate"):
        mixture_variants(["MR:1,CT:0", "MR:1.0,CT:0.0"])
    with pytest.raises(StudyError, match=">= 1"):
        factor_variants([0], [4])


def test_mixture_study_table(tiny_phantom: Path, study_config: Path, tmp_path: Path):
    out = tmp_path / "mix"
    argv = ["experiment", "mix", "--config", str(study_config), "--data", str(tiny_phantom), "--out", str(out),
            "--mixes", "MR:1,CT:1", "MR:1,CT:0", *RUNNER, "--set", 'data.modality="MR+CT"']
    run = run_cli(argv)
    assert run.rc == 0, run.err
    grid = StudyGrid.read(out)
    assert grid.kind == "mix" and grid.methods == ("MR1-CT1", "MR1-CT0")
    result = json.loads((out / "MR1-CT0" / "f1" / "fold0" / "result.json").read_text())
    assert {v["modality"] for v in result["test"]["volumes"]} == {"MR", "CT"}  # tested in both modalities
    assert 'data.modality_mix="MR:1,CT:0"' in result["method_overrides"]
    table = run_cli(["experiment", "table", str(out)])
    assert table.rc == 0, table.err
    md = (out / "table.md").read_text()
    assert "| MR train | CT train | MR test Dice | CT test Dice | runs |" in md
    row = next(line for line in md.splitlines() if line.startswith("| 100% | 0% |"))
    assert row.split("|")[4].strip() == "—"  # no CT score for a model that never saw CT (as the paper)
    mean, std = (float(x) for x in row.split("|")[3].split("±"))
    assert 0 <= mean <= 1 and 0 <= std <= 1
    assert len((out / "table.csv").read_text().splitlines()) == 3
    rerun = run_cli(argv)
    assert rerun.rc == 0 and "2 skipped" in rerun.out
    clash = run_cli([*argv[:-2], "--set", "data.modality_mix=MR:1,CT:1"])
    assert clash.rc == 2 and "data.modality_mix" in clash.err


def test_factor_study_table(tiny_phantom: Path, study_config: Path, tmp_path: Path):
    out = tmp_path / "factors"
    argv = ["experiment", "factors", "--config", str(study_config), "--data", str(tiny_phantom), "--out", str(out),
            "--channels", "4", "--nz", "2,3", *RUNNER]
    dry = run_cli([*argv, "--dry-run"])
    assert dry.rc == 0 and "C4-nz2/f1/fold0" in dry.out and "model.n_z=3" in dry.out
    run = run_cli([*argv, "--run-index", "1"])
    assert run.rc == 0, run.err
    table = run_cli(["experiment", "table", str(out)])
    assert table.rc == 0, table.err
    lines = (out / "table.md").read_text().splitlines()
    done = next(line for line in lines if line.startswith("| 4 | 3 |"))
    variances = [float(v) for v in done.split("|")[5].split(",")]
    assert len(variances) == 3 and all(v > 0 for v in variances) and variances == sorted(variances)
    usage = [float(u) for u in done.split("|")[7].split(",")]  # % of test pixels per anatomy channel
    assert len(usage) == 4 and usage == sorted(usage, reverse=True) and all(u >= 0 for u in usage)
    assert abs(sum(usage) - 100) < 0.5  # argmax binarisation: every pixel in exactly one channel (1-decimal rounding)
    assert int(done.split("|")[6]) == sum(u > 0.1 for u in usage)
    missing = next(line for line in lines if line.startswith("| 4 | 2 |"))
    assert "—" in missing and missing.rstrip(" |").endswith("0")
