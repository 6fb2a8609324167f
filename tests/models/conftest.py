"""Tiny model sizes shared by the model tests (32×32 images, 4–8 channels, batch 2)."""

from __future__ import annotations

import pytest
import torch

from sdnet.config import ModelConfig

IMAGE_SIZE = 32
BATCH = 2
ANATOMY_CHANNELS = 4


@pytest.fixture
def tiny_config() -> ModelConfig:
    return ModelConfig(
        image_size=IMAGE_SIZE,
        anatomy_channels=ANATOMY_CHANNELS,
        n_z=4,
        unet_filters=4,
        unet_depth=3,
        modality_filters=4,
        modality_layers=3,
        modality_hidden=8,
        decoder_blocks=2,
        segmentor_filters=8,
        n_classes=4,
        discriminator_filters=4,
        discriminator_blocks=2,
    )


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
