"""Small helpers: seeding, evaluation mode."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (weights init, VAE sampling, the fake pool)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode and ``torch.inference_mode`` for the block; yields the model's device and restores its training
    flag afterwards (also when the block raises)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


__all__ = ["evaluating", "seed_everything"]
