"""The inference copy (BatchNorm folded, channels-last): same outputs as the eval-mode model, model untouched."""

import torch
from torch import nn

from sdnet.config import ModelConfig
from sdnet.models import build_sdnet, build_segmenter, for_inference


def _train_a_little(model: nn.Module, x: torch.Tensor) -> None:
    """A few train-mode passes so that BatchNorm running statistics are not the initial 0 / 1."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.segment(x)  # type: ignore[operator]


def test_inference_copy_matches_the_eval_model(tiny_model_config: ModelConfig, image: torch.Tensor):
    torch.manual_seed(0)
    model = build_sdnet(tiny_model_config)
    _train_a_little(model, image)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = for_inference(model)
    assert model.training  # the original keeps its mode and weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model.eval()
    with torch.no_grad():
        expected, got = model.segment(image), fast.segment(image)
        torch.testing.assert_close(got.probabilities, expected.probabilities, atol=1e-5, rtol=1e-4)
        assert (got.labels != expected.labels).float().mean() < 0.01
        e_ref, e_fast = model.encode(image, sample=False), fast.encode(image, sample=False)
        torch.testing.assert_close(e_fast.modality.mu, e_ref.modality.mu, atol=1e-4, rtol=1e-4)


def test_inference_copy_of_the_baseline_unet(tiny_model_config: ModelConfig, image: torch.Tensor):
    torch.manual_seed(0)
    model = build_segmenter(tiny_model_config, "unet")
    _train_a_little(model, image)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(for_inference(model).segment(image).probabilities,
                                   model.segment(image).probabilities, atol=1e-5, rtol=1e-4)
