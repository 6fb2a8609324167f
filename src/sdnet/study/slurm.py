"""Study grids on a Slurm cluster: one grid cell per job-array task.

``sdnet experiment semi ... --slurm`` writes ``<study>/sbatch.sh``: a job array over the grid's run indices whose
every task runs the same ``sdnet experiment`` command for its index (``SLURM_ARRAY_TASK_ID``, which
``--run-index`` also reads when it is not given). Runs are restartable, so a pre-empted or failed task is simply
submitted again (``sbatch --array=K sbatch.sh``; ``sdnet experiment table`` lists the runs still missing with their
indices) and a finished one is skipped. The ``#SBATCH`` lines for time, partition and GPUs are written commented
out, for the cluster's own values.

Example::

    plan = plan_study(...)
    write_sbatch(plan, "studies/semi", ["experiment", "semi", "--config", "c.yaml", ...])
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from sdnet.errors import SDNetError
from sdnet.outputs import write_text
from sdnet.study.grid import StudyPlan

TASK_VARIABLE = "SLURM_ARRAY_TASK_ID"


def array_task_index() -> int | None:
    """This job-array task's index (``SLURM_ARRAY_TASK_ID``), or ``None`` outside a job array.

    Raises:
        SDNetError: the variable is set but not a whole number.
    """
    value = os.environ.get(TASK_VARIABLE, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise SDNetError(f"{TASK_VARIABLE}={value!r} is not a run index") from None


def _slurm_value(text: str) -> str:
    """A value for a double-quoted ``#SBATCH`` option: ``%`` is Slurm's file-name pattern character."""
    if '"' in text or "\n" in text:
        raise SDNetError(f"{text!r}: a study folder for --slurm cannot contain double quotes or newlines")
    return text.replace("%", "%%")


def _without(argv: list[str], flags: tuple[str, ...], valued: tuple[str, ...]) -> list[str]:
    """``argv`` without the switches ``flags`` and the options ``valued`` (with their values)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            continue
        if name in valued:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def write_sbatch(plan: StudyPlan, study_dir: str | Path, argv: list[str], *, cpus: int = 4,
                 max_parallel: int = 0) -> Path:
    """Write ``<study_dir>/sbatch.sh``, a Slurm job array running each run of ``plan`` as one task.

    Args:
        plan: the study's plan (its number of runs sets the array's range).
        study_dir: the study folder (created); task logs go to ``<study_dir>/slurm/``.
        argv: the ``sdnet`` arguments that plan the study (``--slurm``, ``--dry-run``, ``--jobs`` and
            ``--run-index`` are dropped; the task's index is added).
        cpus: ``--cpus-per-task`` (each run uses the cores it is given).
        max_parallel: at most this many tasks at once (``%N`` of ``--array``; 0 = no limit).

    Returns:
        The script's path. Run it with ``sbatch``, or locally with ``SLURM_ARRAY_TASK_ID=K bash sbatch.sh``.
    """
    out = Path(study_dir)
    total = len(plan.runs)
    if total == 0:
        raise SDNetError("the study grid has no runs")
    if cpus < 1 or max_parallel < 0:
        raise SDNetError(f"--slurm-cpus must be >= 1 and --slurm-max-parallel >= 0, got {cpus} and {max_parallel}")
    args = _without(list(argv), ("--slurm", "--dry-run"), ("--jobs", "--run-index", "--slurm-cpus",
                                                          "--slurm-max-parallel"))
    limit = f"%{max_parallel}" if max_parallel > 0 else ""
    command = " ".join([shlex.quote(sys.executable), "-m", "sdnet", *map(shlex.quote, args),
                        "--run-index", f'"${{{TASK_VARIABLE}:?run this script with sbatch or set {TASK_VARIABLE}}}"'])
    script = "\n".join([
        "#!/usr/bin/env bash",
        f"# {total} runs of the study in {out} ({plan.grid.kind}): one job-array task per run, written by sdnet.",
        "# Submit: sbatch sbatch.sh; resubmit missing runs: sbatch --array=K[,K...] sbatch.sh",
        "# (`sdnet experiment table` lists them). Locally: SLURM_ARRAY_TASK_ID=K bash sbatch.sh",
        f'#SBATCH --job-name="{_slurm_value("sdnet-" + (out.name or "study"))}"',
        f"#SBATCH --array=0-{total - 1}{limit}",
        f"#SBATCH --cpus-per-task={cpus}",
        f'#SBATCH --output="{_slurm_value(str((out / "slurm").resolve()))}/%A_%a.out"',
        "##SBATCH --time=04:00:00      # fill in for your cluster",
        "##SBATCH --partition=gpu",
        "##SBATCH --gres=gpu:1         # with --set train.device=cuda",
        "set -euo pipefail",
        f"cd {shlex.quote(os.getcwd())}",
        command,
        "",
    ])
    (out / "slurm").mkdir(parents=True, exist_ok=True)  # Slurm opens --output before the script runs
    plan.grid.write(out)  # study.json: `sdnet experiment table` and --dry-run work before the first task ran
    path = out / "sbatch.sh"
    write_text(path, script)
    path.chmod(0o755)
    return path
