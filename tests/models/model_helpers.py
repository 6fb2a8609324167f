"""The tiny anatomy readers of the model tests: the FiLM decoder and the segmentor at the sizes of
``tiny_model_config`` (C = 4 anatomy channels, n_z = 4, 2 FiLM blocks, 4 classes, 8 filters)."""

from __future__ import annotations

from sdnet.models import FiLMDecoder, Segmentor


def tiny_decoder(**kwargs: int) -> FiLMDecoder:
    return FiLMDecoder(anatomy_channels=4, n_z=4, n_blocks=2, **kwargs)


def tiny_segmentor() -> Segmentor:
    return Segmentor(anatomy_channels=4, n_classes=4, filters=8)
