"""A tiny study, run once per session: 2 SDNet variants x 2 label amounts x 2 folds on the tiny phantom."""

from __future__ import annotations

from pathlib import Path

import pytest

from .study_helpers import TinyStudy, run_cli, semi_argv, write_study_config


@pytest.fixture(scope="session")
def study_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_study_config(tmp_path_factory.mktemp("study_config") / "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_study(tiny_phantom: Path, study_config: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyStudy:
    """The whole grid run once through the CLI; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("study") / "semi"
    argv = semi_argv(study_config, tiny_phantom, out)
    first = run_cli(argv)
    assert first.rc == 0, first.err
    return TinyStudy(dir=out, argv=argv, first=first)
