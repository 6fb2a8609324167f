"""Modality transfer (paper §5.3.2): g(s_A, μ_B), the histogram-matching baseline, scores against the phantom truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sdnet.analysis.transfer import histogram_matched, score_transfer, similarity, transfer
from sdnet.config import DataConfig
from sdnet.data.pipeline import prepare_data
from sdnet.errors import SDNetError
from sdnet.models import SDNet, build_sdnet

from ..helpers import tiny_config


@pytest.fixture
def model() -> SDNet:
    torch.manual_seed(0)
    return build_sdnet(tiny_config().model)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_transfer_decodes_the_anatomy_of_a_with_the_mean_modality_of_b(model: SDNet):
    xa, xb = _images(3, 0), _images(3, 1)
    model.train()
    out = transfer(model, xa, xb, batch_size=2)
    assert model.training and out.shape == (3, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        expected = model.decode(model.encode(xa, sample=False).anatomy, model.encode(xb, sample=False).modality.mu)
    torch.testing.assert_close(out, expected)
    # one modality image for all: its μ is broadcast
    one = transfer(model, xa, xb[:1])
    with torch.no_grad():
        mu = model.encode(xb[:1], sample=False).modality.mu.expand(3, -1)
        torch.testing.assert_close(one, model.decode(model.encode(xa, sample=False).anatomy, mu))
    with pytest.raises(SDNetError, match="modality images"):
        transfer(model, xa, xb[:2])
    with pytest.raises(SDNetError, match=r"\(N, 1, H, W\)"):
        transfer(model, xa[0], xb)


def test_histogram_matching_takes_the_reference_intensities():
    rng = np.random.default_rng(0)
    source = rng.normal(0, 1, (16, 16)).astype(np.float32)
    reference = rng.uniform(-1, 0.5, (16, 16)).astype(np.float32)
    matched = histogram_matched(source, reference)
    np.testing.assert_allclose(np.sort(matched.ravel()), np.sort(reference.ravel()), atol=1e-6)
    assert np.array_equal(np.argsort(matched.ravel(), kind="stable"), np.argsort(source.ravel(), kind="stable"))


def test_similarity_ranks_a_closer_image_higher():
    rng = np.random.default_rng(1)
    truth = np.clip(rng.normal(0, 0.4, (32, 32)), -1, 1)
    close = truth + rng.normal(0, 0.01, truth.shape)
    far = truth + rng.normal(0, 0.3, truth.shape)
    (p_close, s_close), (p_far, s_far) = similarity(close, truth), similarity(far, truth)
    assert p_close > p_far and s_close > s_far and s_close <= 1
    assert p_close == pytest.approx(10 * np.log10(4 / np.mean((np.clip(close, -1, 1) - truth) ** 2)))


def test_score_transfer_on_the_phantom_pairs_other_subjects(tiny_phantom: Path, model: SDNet):
    data = prepare_data(DataConfig(root=str(tiny_phantom), modality="MR+CT", val_fraction=0.25, test_fraction=0.25,
                                   target_spacing_mm=0.0, cache_dir="none"), image_size=32, n_classes=4)
    scores = score_transfer(model, data.test, source="MR", target="CT")
    n_test = len({v.subject_id for v in data.test})
    assert (scores.source, scores.target) == ("MR", "CT")
    assert scores.n_volumes == 2 * n_test and scores.n_slices == 3 * scores.n_volumes  # ED/ES x 3 slices
    for mean, std in (scores.psnr, scores.ssim, scores.baseline_psnr, scores.baseline_ssim):
        assert np.isfinite(mean) and std >= 0
    assert -1 <= scores.ssim[0] <= 1 and 0 <= scores.dice_transfer <= 1 and 0 <= scores.dice_source <= 1
    with pytest.raises(SDNetError, match=">= 2 subjects"):
        score_transfer(model, [v for v in data.test if v.subject_id == data.test[0].subject_id])
