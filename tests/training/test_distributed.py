"""Data-parallel training with torchrun (gloo, CPU, 2 processes) on the tiny phantom.

* every process holds the same parameters after every iteration; only rank 0 writes (a write on rank 1 raises in
  tests/training/ddp_worker.py); the run folder has the files of a single-process run;
* gradient averaging equals one process' global-batch gradient on a network without BatchNorm (< 1e-6);
* against one process with the same global batch, SDNet's trajectory differs by the per-process BatchNorm
  statistics, the shard-averaged batch Dice and per-process VAE noise (sdnet.training.distributed; SyncBatchNorm
  has no CPU kernel). Measured as the cosine between the parameter displacements θ_6 − θ_0 after 6 iterations:
  0.39 between the 2-process and the 1-process run, against 0.60 between two 1-process runs that differ only in
  their VAE noise and pool draws; asserted: more than half the noise-only agreement, and not equal;
* a worker killed mid-run under ``torchrun --max-restarts 1`` is restarted, the run continues from ``last.pt`` and
  ends with exactly the parameters of an uninterrupted 2-process run.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from sdnet.checkpoint import load_checkpoint
from sdnet.config import apply_overrides, save_config
from sdnet.errors import SDNetError
from sdnet.training import Trainer
from sdnet.training.start import default_run_dir

from ..helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")


def _torchrun(*args: str, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "--max-restarts", str(restarts), *args]


TEARDOWN_ABORT = "terminate called without an active exception"


def _run_workers(phantom: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """tests/training/ddp_worker.py under torchrun with 2 processes, run folder ``tmp_path/ddp``, output
    ``tmp_path/out``.

    The workers end as ``sdnet train`` does, through :func:`sdnet.training.distributed.exit_worker`: gloo's C++
    teardown abort at interpreter exit (seen once in CI; 3 of 40 local runs beside two training runs before
    ``exit_worker``, 0 of 40 after) cannot happen any more. Should it still, the run is repeated once from scratch
    with a warning; any other failure, including every assertion of the worker, fails at once."""
    def once() -> subprocess.CompletedProcess[str]:
        for folder in ("ddp", "out"):
            shutil.rmtree(tmp_path / folder, ignore_errors=True)
        return subprocess.run(_torchrun(str(WORKER), str(phantom), str(tmp_path / "ddp"), str(tmp_path / "out"),
                                        *args), env=_env(), capture_output=True, text=True, timeout=300)

    run = once()
    if run.returncode != 0 and TEARDOWN_ABORT in run.stderr and "Traceback (most recent call last)" not in \
            run.stderr.split(TEARDOWN_ABORT)[0]:
        warnings.warn(f"a torchrun worker aborted in gloo's teardown; rerunning once:\n{run.stderr[-1500:]}",
                      stacklevel=2)
        run = once()
    return run


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _flat(nets: list[torch.nn.Module]) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for n in nets for p in n.parameters()])


def test_two_processes_keep_equal_parameters_and_only_rank0_writes(tiny_phantom: Path, tmp_path: Path):
    steps = ["train.max_steps=6"]
    run = _run_workers(tiny_phantom, tmp_path, *steps)
    assert run.returncode == 0, run.stderr[-6000:]
    final = torch.load(tmp_path / "out" / "final.pt")
    assert final["steps"] == 6 and final["equal_every_step"] == [True] * 6
    assert final["sync_error"] < 1e-6  # averaged shard gradients = the global batch's (no BatchNorm)

    cfg = apply_overrides(tiny_config(tiny_phantom, batch_size=4), steps)

    def single(folder: str, noise_seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        t = Trainer(cfg, tmp_path / folder)
        start = _flat([t.model, t.discriminator])
        if noise_seed is not None:  # same weights and batches, other VAE noise and pool draws
            torch.manual_seed(noise_seed)
        t.fit()
        return start, _flat([t.model, t.discriminator])

    def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ b / (a.norm() * b.norm()))

    start, one = single("single")
    _, reseeded = single("reseeded", noise_seed=12345)
    ddp = cosine(final["params"] - start, one - start)   # measured 0.39 (6 iterations, 2 images per process)
    noise = cosine(reseeded - start, one - start)        # measured 0.60: one process, other noise only
    assert 0.5 * noise < ddp < 1 - 1e-6, (ddp, noise)    # BatchNorm over 2 instead of 4 images: not equal
    names = sorted(p.relative_to(tmp_path / "ddp").as_posix() for p in (tmp_path / "ddp").rglob("*")
                   if p.parent.name != "tb")
    assert names == sorted(p.relative_to(tmp_path / "single").as_posix()
                           for p in (tmp_path / "single").rglob("*") if p.parent.name != "tb")
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["world_size"] == 2


def test_resume_with_another_process_count_says_what_differs(tiny_phantom: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture):
    run = _run_workers(tiny_phantom, tmp_path, "train.max_steps=3")
    assert run.returncode == 0, run.stderr[-6000:]
    with caplog.at_level(logging.WARNING, logger="sdnet"):
        resumed = Trainer.resume(tmp_path / "ddp", overrides=["train.max_steps=5"])
    assert resumed.step == 3
    line = [r.getMessage() for r in caplog.records if "process(es)" in r.getMessage()]
    assert len(line) == 1 and "trained on 2 process(es) with 1" in line[0] and "global batch" in line[0]
    assert resumed.fit().steps == 5


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def _workers(agent: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun's agent ``agent`` started."""
    out = subprocess.run(["pgrep", "-P", str(agent)], capture_output=True, text=True).stdout.split()
    return {r: int(p) for p in out if (r := _rank_of(int(p))) is not None}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_killed_worker_is_restarted_and_the_run_resumes_exactly(tiny_phantom: Path, tmp_path: Path):
    cfg = apply_overrides(tiny_config(tiny_phantom, batch_size=4),
                          ["train.max_steps=40", "train.checkpoint_every=5", "train.log_every=1",
                           "train.steps_per_epoch=8", "train.epochs=10"])
    save_config(cfg, tmp_path / "config.yaml")

    def train(out: Path, restarts: int) -> subprocess.Popen[str]:
        return subprocess.Popen(_torchrun("-m", "sdnet", "train", "--config", str(tmp_path / "config.yaml"),
                                          "--out", str(out), "--no-progress", restarts=restarts),
                                env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    straight = train(tmp_path / "straight", 0)
    assert straight.wait(timeout=300) == 0, straight.stdout.read() if straight.stdout else ""

    killed = train(tmp_path / "killed", 1)
    log = tmp_path / "killed" / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for a checkpoint, then kill rank 1 between checkpoints
        if log.is_file() and sum(1 for _ in log.open()) >= 12 and (tmp_path / "killed" / "last.pt").is_file():
            break
        time.sleep(0.05)
    workers = _workers(killed.pid)
    assert 1 in workers, workers
    os.kill(workers[1], signal.SIGKILL)
    output = killed.communicate(timeout=300)[0]
    (tmp_path / "killed_output.txt").write_text(output)
    assert killed.returncode == 0, output[-3000:]
    assert "restarted by torchrun: continuing" in output

    a, b = (load_checkpoint(tmp_path / name / "last.pt") for name in ("straight", "killed"))
    assert a["step"] == b["step"] == 40
    for key in ("model", "discriminator"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"


def test_torchrun_needs_one_named_run_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert default_run_dir(tmp_path / "r") == tmp_path / "r"
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SDNetError, match="under torchrun, sdnet train needs --out"):
        default_run_dir(None)


def test_a_non_finite_loss_on_one_process_stops_every_process(tiny_phantom: Path, tmp_path: Path):
    run = _run_workers(tiny_phantom, tmp_path, "train.max_steps=4", "nan-on-rank1")
    assert run.returncode == 0, run.stderr[-6000:]
    first, second = ((tmp_path / "out" / f"stopped_rank{r}.txt").read_text().split("\n", 1) for r in (0, 1))
    assert first[0] == second[0] == "0"  # the same step on both processes, before any update
    assert "another process' shard is non-finite" in first[1] and "the loss is nan" in second[1]
