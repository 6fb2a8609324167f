"""Tiny inputs shared by the model tests (batch 2, 32×32, C = 4, as ``tiny_model_config`` in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

IMAGE_SIZE = 32
BATCH = 2
ANATOMY_CHANNELS = 4


@pytest.fixture
def image() -> torch.Tensor:
    """(2, 1, 32, 32) float in [-1, 1]."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(BATCH, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 2 - 1


@pytest.fixture
def anatomy() -> torch.Tensor:
    """(2, 4, 32, 32) one-hot binary anatomy factor."""
    generator = torch.Generator().manual_seed(1)
    index = torch.randint(ANATOMY_CHANNELS, (BATCH, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator)
    return torch.zeros(BATCH, ANATOMY_CHANNELS, IMAGE_SIZE, IMAGE_SIZE).scatter_(1, index, 1.0)
