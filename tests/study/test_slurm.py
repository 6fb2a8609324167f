"""Study grids on Slurm: ``--slurm`` writes a job array; a task runs one grid cell; ``--run-index`` reads
``SLURM_ARRAY_TASK_ID``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sdnet.study import run_state
from sdnet.study.slurm import array_task_index

from .study_helpers import FOLDS, LABELLED, METHODS, run_cli, semi_argv, write_study_config

ROOT = Path(__file__).resolve().parents[2]
N_RUNS = len(METHODS) * len(LABELLED) * FOLDS


def test_job_array_script_runs_one_grid_cell(tiny_phantom: Path, tmp_path: Path):
    config = write_study_config(tmp_path / "study.yaml")
    study = tmp_path / "study"
    res = run_cli(semi_argv(config, tiny_phantom, study, "--slurm", "--slurm-cpus", "1", "--jobs", "3"))
    assert res.rc == 0, res.err
    script = study / "sbatch.sh"
    text = script.read_text()
    assert f"#SBATCH --array=0-{N_RUNS - 1}\n" in text and "#SBATCH --cpus-per-task=1\n" in text
    assert "--slurm" not in text.split("#SBATCH --gres")[1] and "--jobs" not in text  # not passed on to tasks
    assert (study / "slurm").is_dir() and (study / "study.json").is_file()
    assert not list(study.glob("sdnet*/**/result.json"))  # nothing trained yet
    assert os.access(script, os.X_OK)

    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "5", "PYTHONPATH": str(ROOT)}
    task = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert task.returncode == 0, task.stdout[-2000:] + task.stderr[-2000:]
    grid = json.loads((study / "study.json").read_text())["runs"]
    states = {r["name"]: run_state(study / r["name"]) for r in grid}
    assert [name for name, state in states.items() if state == "done"] == [grid[5]["name"]]
    assert "1 finished, 0 skipped, 0 failed" in task.stdout

    without = {k: v for k, v in env.items() if k != "SLURM_ARRAY_TASK_ID"}
    outside = subprocess.run(["bash", str(script)], env=without, capture_output=True, text=True, timeout=60)
    assert outside.returncode != 0 and "SLURM_ARRAY_TASK_ID" in outside.stderr  # refuses to run the whole grid


def test_run_index_reads_the_array_task_variable(monkeypatch: pytest.MonkeyPatch, tiny_phantom: Path,
                                                 tmp_path: Path):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "99")
    assert array_task_index() == 99
    res = run_cli(semi_argv(write_study_config(tmp_path / "s.yaml"), tiny_phantom, tmp_path / "study"))
    assert res.rc == 2 and f"--run-index 99 is out of range: the grid has {N_RUNS} runs" in res.err
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "two")
    res = run_cli(semi_argv(write_study_config(tmp_path / "s.yaml"), tiny_phantom, tmp_path / "study"))
    assert res.rc == 2 and "SLURM_ARRAY_TASK_ID='two' is not a run index" in res.err
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert array_task_index() is None


def test_script_options_are_quoted_and_checked(tiny_phantom: Path, tmp_path: Path):
    config = write_study_config(tmp_path / "study.yaml")
    study = tmp_path / "my 50% study"
    res = run_cli(semi_argv(config, tiny_phantom, study, "--slurm"))
    assert res.rc == 0, res.err
    text = (study / "sbatch.sh").read_text()
    assert '#SBATCH --job-name="sdnet-my 50%% study"' in text and '50%% study/slurm/%A_%a.out"' in text
    assert (study / "study.json").is_file()  # the table and --dry-run work before any task ran
    res = run_cli(semi_argv(config, tiny_phantom, tmp_path / "s2", "--slurm", "--slurm-cpus", "0"))
    assert res.rc == 2 and "--slurm-cpus must be >= 1" in res.err
    with pytest.raises(SystemExit):  # abbreviations are refused: the job script replays the command as typed
        run_cli(semi_argv(config, tiny_phantom, tmp_path / "s3", "--slurm", "--dry"))
