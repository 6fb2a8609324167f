"""Helpers shared by tests: the tiny phantom, the tiny run config, parameter counting.

``tests/`` is a package, so test modules import these relatively (``from .helpers import ...`` or
``from ..helpers import ...`` one folder down).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from sdnet.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sdnet.data.phantom import PhantomConfig

TINY_PHANTOM = PhantomConfig(n_subjects=8, image_size=32, n_slices=3, n_phases=3, seed=0)


def tiny_config(root: Path | str = "", **train: object) -> RunConfig:
    """A 32-px SDNet small enough for a training step in a few milliseconds (``.model``: the model tests' sizes).

    The one definition of the tests' tiny sizes: 32×32 images, C = 4 anatomy channels, n_z = 4, 4–8 filters,
    4 classes (the ``ModelConfig`` default); ``**train`` overrides ``TrainConfig`` fields.
    """
    model = ModelConfig(
        image_size=32, anatomy_channels=4, n_z=4, unet_filters=4, unet_depth=3, modality_filters=4,
        modality_layers=3, modality_hidden=8, decoder_blocks=2, segmentor_filters=8, discriminator_filters=4,
        discriminator_blocks=2,
    )
    data = DataConfig(root=str(root), labelled_subjects=2, val_fraction=0.25, test_fraction=0.25,
                      target_spacing_mm=0.0, cache_dir="none")
    defaults: dict[str, object] = {"batch_size": 2, "steps_per_epoch": 4, "epochs": 3, "log_every": 2,
                                   "checkpoint_every": 3, "patience": 0, "seed": 0}
    defaults.update(train)
    return RunConfig(model=model, data=data, train=TrainConfig(**defaults))  # type: ignore[arg-type]


def count_parameters(module: nn.Module) -> int:
    """The number of trainable parameters (those with ``requires_grad``) of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def ssl4mis_root() -> Path:
    """Where the real SSL4MIS ACDC release lies: ``$SDNET_ACDC_SSL4MIS``, else ``../shared/data/acdc_ssl4mis`` beside
    the repository (the folder may be missing; callers skip then)."""
    override = os.environ.get("SDNET_ACDC_SSL4MIS")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc_ssl4mis"
