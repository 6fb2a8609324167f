"""Helpers of the study tests: the tiny study's grid, its config file, running the CLI in-process."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import yaml

from sdnet.cli import main
from sdnet.config import to_dict

from ..helpers import tiny_config

METHODS = ("sdnet", "sdnet-noadv")
LABELLED = (1, 2)
FOLDS = 2


@dataclass(frozen=True)
class CliRun:
    rc: int
    out: str
    err: str


def run_cli(argv: list[str]) -> CliRun:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return CliRun(rc, out.getvalue(), err.getvalue())


@dataclass(frozen=True)
class TinyStudy:
    dir: Path
    argv: list[str]
    first: CliRun


def write_study_config(path: Path) -> Path:
    """The tests' tiny SDNet, one epoch of 2 steps, one thread."""
    cfg = to_dict(tiny_config("", steps_per_epoch=2, epochs=1, num_threads=1, checkpoint_every=2, log_every=1))
    del cfg["data"]["root"]
    path.write_text(yaml.safe_dump(cfg))
    return path


def semi_argv(config: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["experiment", "semi", "--config", str(config), "--data", str(data), "--out", str(out),
            "--methods", ",".join(METHODS), "--labelled", ",".join(map(str, LABELLED)), "--folds", str(FOLDS),
            *extra]
