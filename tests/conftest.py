"""Shared fixtures: one torch thread, a tiny phantom on disk, the tiny run and model configs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sdnet.config import ModelConfig
from sdnet.data.phantom import write_phantom

from .helpers import TINY_PHANTOM, tiny_config


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread: on tiny tensors extra threads only add overhead (and contention on a 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom of 8 subjects, 32 x 32 px, 3 slices, 3 phases (MR + CT), written once per session."""
    out = tmp_path_factory.mktemp("phantom")
    write_phantom(out, TINY_PHANTOM)
    return out


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    """The tiny run config's model: 32×32 images, C = 4, n_z = 4, 4 classes (see ``helpers.tiny_config``)."""
    return tiny_config().model
