"""Soak (issue 16): one training run killed with SIGKILL 20 times at random moments, each time continued with
``sdnet train --resume`` (or started again when the kill came before its first checkpoint). The final weights must
equal an uninterrupted run's bit for bit and ``log.jsonl`` must hold every step and every epoch exactly once.

Slow (about two minutes on 2 cores): ``pytest -m slow tests/training/test_soak.py -s`` prints the figures quoted in
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sdnet.checkpoint import load_checkpoint
from sdnet.config import to_dict

from ..helpers import tiny_config

KILLS = 20
STEPS_PER_EPOCH, EPOCHS = 50, 30


def _train(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sdnet.cli", "train", *args, "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_twenty_kills_lose_nothing(tiny_phantom: Path, tmp_path: Path):
    cfg = to_dict(tiny_config("", steps_per_epoch=STEPS_PER_EPOCH, epochs=EPOCHS, checkpoint_every=7, log_every=1,
                              num_threads=1))
    del cfg["data"]["root"]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    fresh = ["--config", str(config), "--data", str(tiny_phantom)]
    run = tmp_path / "killed"
    rng = random.Random(16)
    kills, resumes, restarts, redone = 0, 0, 0, 0
    t0 = time.perf_counter()
    while kills < KILLS:
        if (run / "last.pt").is_file():
            before = int(load_checkpoint(run / "last.pt")["step"])
            proc = _train(["--resume", str(run)])
            resumes += 1
        else:  # killed before its first checkpoint: nothing to resume, start again
            before = 0
            proc = _train([*fresh, "--out", str(run)])
            restarts += 1
        time.sleep(rng.uniform(1.5, 5.0))  # start-up (imports, data) takes about 2 s: kills land in both
        if proc.poll() is not None:
            pytest.fail(f"the run finished before kill {kills + 1}; make it longer ({proc.stderr.read()})")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        logged = _steps(run)
        redone += max(0, (max(logged) if logged else 0) - before)
    final = _train(["--resume", str(run)] if (run / "last.pt").is_file() else [*fresh, "--out", str(run)])
    assert final.wait(timeout=600) == 0, final.stderr.read()  # type: ignore[union-attr]
    killed_s = time.perf_counter() - t0
    straight = _train([*fresh, "--out", str(tmp_path / "straight")])
    assert straight.wait(timeout=600) == 0, straight.stderr.read()  # type: ignore[union-attr]

    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(tmp_path / "straight" / "last.pt")
    assert a["step"] == b["step"] == STEPS_PER_EPOCH * EPOCHS
    for part in ("model", "discriminator"):
        for key, value in b[part].items():
            assert torch.equal(a[part][key], value), (part, key)
    for name, state in b["optimisers"].items():  # KerasAdam: {"optimizer": torch Adam state, "updates": n}
        assert a["optimisers"][name]["updates"] == state["updates"], name
        for index, slot in state["optimizer"]["state"].items():
            for key, value in slot.items():
                mine = a["optimisers"][name]["optimizer"]["state"][index][key]
                assert torch.equal(torch.as_tensor(mine), torch.as_tensor(value)), (name, index, key)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["event"] == "step"]
    epochs = [r["epoch"] for r in records if r["event"] == "epoch"]
    assert steps == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))
    assert epochs == list(range(1, EPOCHS + 1))
    straight_epochs = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
                       if '"event": "epoch"' in line]
    for mine, theirs in zip([r for r in records if r["event"] == "epoch"], straight_epochs, strict=True):
        assert {k: v for k, v in mine.items() if k.startswith("mean_")} == \
            {k: v for k, v in theirs.items() if k.startswith("mean_")}
    print(f"\nsoak: {kills} SIGKILLs ({resumes} resumed from last.pt, {restarts} fresh starts before a first "
          f"checkpoint), {redone} iterations redone after kills, {len(steps)} steps and {len(epochs)} epochs logged "
          f"once each, final weights and Adam state bit-identical to an uninterrupted run; {killed_s:.0f} s")


def _steps(run: Path) -> list[int]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "step":
            out.append(int(record["step"]))
    return out
