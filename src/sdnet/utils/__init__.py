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


def at_least_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Promote half-precision (bfloat16 / float16) tensors to float32; other dtypes pass unchanged (float64 stays
    float64). Used where mixed precision (``train.precision=bf16``) must not reach: losses and output heads."""
    return tuple(t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors)


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


__all__ = ["at_least_float32", "evaluating", "seed_everything"]
