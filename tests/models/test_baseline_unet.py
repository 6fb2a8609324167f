from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from sdnet.config import ConfigError, ModelConfig
from sdnet.models import (
    AnatomyEncoder,
    SDNet,
    Segmentation,
    Segmenter,
    UNet,
    UNetSegmenter,
    build_sdnet,
    build_segmenter,
)

from ..helpers import count_parameters


def _body_count(module: UNet) -> int:
    """Parameters without the 1x1 head that every UNet subclass adds."""
    return count_parameters(module) - count_parameters(module.get_submodule("head"))


def _tiny(**kwargs: object) -> UNetSegmenter:
    return UNetSegmenter(n_classes=4, filters=4, depth=3, **kwargs)  # type: ignore[arg-type]


def test_segment_shapes_and_probabilities(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = _tiny().eval()
    logits = model(image)
    assert logits.shape == (2, 4, 32, 32)
    seg = model.segment(image)
    assert isinstance(seg, Segmentation)
    assert torch.equal(seg.logits, logits)
    assert seg.probabilities.shape == (2, 4, 32, 32)
    assert seg.probabilities.min() >= 0 and seg.probabilities.max() <= 1
    torch.testing.assert_close(seg.probabilities.sum(dim=1), torch.ones(2, 32, 32))
    assert seg.labels.shape == (2, 32, 32) and seg.labels.dtype == torch.int64
    assert torch.equal(seg.labels, logits.argmax(dim=1))


def test_soft_output_no_binarisation(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    p = _tiny().eval().segment(image).probabilities
    assert ((p > 0) & (p < 1)).any()


def test_body_is_the_anatomy_encoders_unet() -> None:
    segmenter = _tiny()
    encoder = AnatomyEncoder(anatomy_channels=4, filters=4, depth=3)
    body = UNet(filters=4, depth=3)
    assert _body_count(segmenter) == _body_count(encoder) == count_parameters(body)
    body_keys = [k for k in encoder.state_dict() if not k.startswith("head.")]
    assert [k for k in segmenter.state_dict() if not k.startswith("head.")] == body_keys
    assert list(body.state_dict()) == body_keys
    assert segmenter.head.in_channels == encoder.head.in_channels == 4 and segmenter.head.out_channels == 4


def test_default_parameter_counts() -> None:
    with torch.device("meta"):
        encoder = AnatomyEncoder()
        segmenter = UNetSegmenter(n_classes=4)
        assert _body_count(segmenter) == _body_count(encoder) == 34_526_344 - (64 * 8 + 8)
        assert count_parameters(segmenter) == 34_526_344 - (64 * 8 + 8) + (64 * 4 + 4)


def test_gradient_reaches_first_conv(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = _tiny()
    model.segment(image).probabilities[:, 1:].sum().backward()
    first = model.down[0][0][0]
    assert isinstance(first, nn.Conv2d) and first.in_channels == 1
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        UNetSegmenter(n_classes=1)
    with pytest.raises(ValueError, match="divisible"):
        _tiny()(torch.randn(1, 1, 30, 32))


@pytest.mark.parametrize("method", ["unet", "gan", "selftrain"])
def test_build_segmenter_baselines(tiny_model_config: ModelConfig, method: str) -> None:
    model = build_segmenter(dataclasses.replace(tiny_model_config, bn_momentum=0.1), method)
    assert isinstance(model, UNetSegmenter) and isinstance(model, Segmenter)
    assert model.n_classes == tiny_model_config.n_classes and model.depth == tiny_model_config.unet_depth
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)


def test_build_segmenter_sdnet_is_build_sdnet(tiny_model_config: ModelConfig) -> None:
    torch.manual_seed(0)
    a = build_segmenter(tiny_model_config, "sdnet")
    torch.manual_seed(0)
    b = build_sdnet(tiny_model_config)
    assert isinstance(a, SDNet) and isinstance(a, Segmenter)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match=r"train\.method"):
        build_segmenter(tiny_model_config, "cnn")


def test_decomposition_figure_for_a_unet(image: torch.Tensor, tmp_path: Path) -> None:
    from sdnet.visualise import decomposition_figure

    labels = torch.zeros(2, 32, 32, dtype=torch.int64)
    path = decomposition_figure(_tiny(), image, labels, tmp_path / "fig.png", class_names=["a", "b", "c"])
    assert path.is_file() and path.stat().st_size > 0
