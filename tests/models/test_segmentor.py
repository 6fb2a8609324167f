"""The segmentor alone (shared checks with the decoder: test_heads.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sdnet.models import Segmentor

from .model_helpers import tiny_segmentor


def test_logits_shape(anatomy: torch.Tensor) -> None:
    torch.manual_seed(0)
    logits = tiny_segmentor()(anatomy)
    assert logits.shape == (2, 4, 32, 32)
    torch.testing.assert_close(torch.softmax(logits, dim=1).sum(dim=1), torch.ones(2, 32, 32))


def test_keras_batchnorm_defaults_and_n_classes_check() -> None:
    segmentor = tiny_segmentor()
    norms = [m for m in segmentor.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 and all(m.momentum == 0.01 and m.eps == 1e-3 for m in norms)
    with pytest.raises(ValueError, match="n_classes"):
        Segmentor(n_classes=1)
