"""One writer per run folder (issue 16, failure 1): a second `sdnet train` into a folder that a live run is writing
is refused in one line and changes nothing; a stale lock of a dead process is taken over."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sdnet.config import to_dict
from sdnet.errors import SDNetError
from sdnet.training.run_lock import RunLock

from ..helpers import tiny_config


def test_second_writer_is_refused_and_stale_locks_are_taken_over(tmp_path: Path):
    run = tmp_path / "run"
    with RunLock(run), pytest.raises(SDNetError, match=r"another sdnet process \(PID \d+\) is writing this run"):
        _other_process_lock(run)
    assert not (run / ".lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / ".lock").write_text(dead.stdout.strip())  # a killed run's lock
    with RunLock(run) as lock:
        assert lock.held and (run / ".lock").read_text() == str(os.getpid())


def _other_process_lock(run: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "import sys; from sdnet.training.run_lock import RunLock; "
                          f"RunLock({str(run)!r}).acquire()"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SDNetError(out.stderr.strip().splitlines()[-1].split(": ", 1)[-1])


def test_two_train_processes_on_one_folder(tmp_path: Path, tiny_phantom: Path):
    cfg = to_dict(tiny_config("", epochs=1, steps_per_epoch=60, checkpoint_every=50))
    del cfg["data"]["root"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    argv = [sys.executable, "-m", "sdnet.cli", "train", "--config", str(tmp_path / "c.yaml"), "--data",
            str(tiny_phantom), "--out", str(tmp_path / "run"), "--no-progress"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "run" / ".lock").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = subprocess.run(argv, capture_output=True, text=True)
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert second.returncode == 2, second.stderr
    assert second.stderr.count("\n") == 1 and "another sdnet process" in second.stderr
    log = [line for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"event": "step"' in line]
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in log]
    assert steps == sorted(set(steps))  # one run's steps, each once
    assert not (tmp_path / "run" / ".lock").exists()
