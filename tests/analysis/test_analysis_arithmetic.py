"""Latent space arithmetic (paper §5.5): channel operations, channel matching, z grid, correlation, figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sdnet.analysis.arithmetic import (
    ArithmeticResult,
    InterpolationGrid,
    channel_arithmetic,
    match_channels,
    move_channel,
    pearson_map,
    permute_channels,
    swap_channels,
    z_interpolation,
)
from sdnet.analysis.arithmetic_figures import arithmetic_figure, interpolation_figure
from sdnet.config import ModelConfig
from sdnet.models import SDNet, build_sdnet

from ..helpers import tiny_config

_TINY = tiny_config().model
SIZE, CHANNELS, N_Z = _TINY.image_size, _TINY.anatomy_channels, _TINY.n_z  # 32, 4, 4


@pytest.fixture
def model(tiny_model_config: ModelConfig) -> SDNet:
    """A tiny untrained SDNet (32×32, C = 4, n_z = 4): ``tiny_model_config`` of tests/conftest.py."""
    torch.manual_seed(0)
    return build_sdnet(tiny_model_config)


@pytest.fixture
def images() -> torch.Tensor:
    """(2, 1, 32, 32) float in [-1, 1]."""
    return torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture
def anatomy() -> torch.Tensor:
    """(2, 5, 8, 8) one-hot binary anatomy factor."""
    index = torch.randint(5, (2, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    return torch.zeros(2, 5, 8, 8).scatter_(1, index, 1.0)


def _is_binary(t: torch.Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all())


# ---------------------------------------------------------------------------------------------- pearson_map


def test_pearson_map_equals_numpy_corrcoef() -> None:
    rng = np.random.default_rng(0)
    values = np.linspace(-3, 3, 7)
    images = rng.normal(size=(7, 3, 4))
    images[:, 0, 0] = 2 * values + 1  # perfectly correlated
    images[:, 0, 1] = -values  # perfectly anti-correlated
    images[:, 2, 3] = 0.25  # constant → 0
    rho = pearson_map(torch.from_numpy(values), torch.from_numpy(images)).numpy()
    assert rho.shape == (3, 4)
    for h in range(3):
        for w in range(4):
            expected = 0.0 if (h, w) == (2, 3) else np.corrcoef(values, images[:, h, w])[0, 1]
            assert rho[h, w] == pytest.approx(expected, abs=1e-12), (h, w)
    assert rho[0, 0] == pytest.approx(1.0) and rho[0, 1] == pytest.approx(-1.0)


def test_pearson_map_is_zero_on_constant_pixels_and_keeps_float32() -> None:
    values = torch.linspace(-3, 3, 7)
    images = torch.full((7, 2, 2), 0.1)  # 0.1 is not exact in binary: the mean must not create noise
    images[:, 1, 1] = values
    rho = pearson_map(values, images)
    assert rho.dtype == torch.float32
    torch.testing.assert_close(rho, torch.tensor([[0.0, 0.0], [0.0, 1.0]]))


def test_pearson_map_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal"):
        pearson_map(torch.ones(3), torch.rand(3, 2, 2))
    with pytest.raises(ValueError):
        pearson_map(torch.rand(3), torch.rand(4, 2, 2))


# ----------------------------------------------------------------------------------- anatomy-channel operations


def test_move_channel_empties_source_and_target_is_union(anatomy: torch.Tensor) -> None:
    before = anatomy.clone()
    moved = move_channel(anatomy, 1, 3)
    torch.testing.assert_close(anatomy, before)  # input not modified
    assert moved.shape == anatomy.shape and _is_binary(moved)
    assert bool((moved[:, 1] == 0).all())
    torch.testing.assert_close(moved[:, 3], torch.maximum(anatomy[:, 1], anatomy[:, 3]))
    for c in (0, 2, 4):
        torch.testing.assert_close(moved[:, c], anatomy[:, c])


def test_move_channel_clamps_overlapping_soft_content() -> None:
    s = torch.ones(1, 2, 2, 2)
    moved = move_channel(s, 0, 1)
    torch.testing.assert_close(moved[:, 1], torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="same channel"):
        move_channel(s, 1, 1)
    with pytest.raises(ValueError):
        move_channel(s, 0, 2)


def test_swap_channels_exchanges_and_twice_is_identity(anatomy: torch.Tensor) -> None:
    before = anatomy.clone()
    swapped = swap_channels(anatomy, 0, 2)
    torch.testing.assert_close(anatomy, before)
    assert swapped.shape == anatomy.shape and _is_binary(swapped)
    torch.testing.assert_close(swapped[:, 0], anatomy[:, 2])
    torch.testing.assert_close(swapped[:, 2], anatomy[:, 0])
    torch.testing.assert_close(swapped[:, [1, 3, 4]], anatomy[:, [1, 3, 4]])
    torch.testing.assert_close(swap_channels(swapped, 0, 2), anatomy)
    assert not torch.equal(swapped, anatomy)


def test_permute_channels_is_a_reproducible_permutation(anatomy: torch.Tensor) -> None:
    before = anatomy.clone()
    permuted, permutation = permute_channels(anatomy, torch.Generator().manual_seed(3))
    again, permutation_again = permute_channels(anatomy, torch.Generator().manual_seed(3))
    torch.testing.assert_close(anatomy, before)
    assert permuted.shape == anatomy.shape and _is_binary(permuted)
    assert sorted(permutation.tolist()) == list(range(5))
    assert torch.equal(permutation, permutation_again) and torch.equal(permuted, again)
    for c in range(5):
        torch.testing.assert_close(permuted[:, c], anatomy[:, int(permutation[c])])
    others = {tuple(permute_channels(anatomy, torch.Generator().manual_seed(seed))[1].tolist()) for seed in range(8)}
    assert len(others) > 1  # the generator is actually used


# ------------------------------------------------------------------------------------------------ match_channels


def test_match_channels_recovers_a_planted_order() -> None:
    labels = torch.randint(4, (3, 16, 16), generator=torch.Generator().manual_seed(2))  # classes 0..3
    planted = {1: 4, 2: 0, 3: 2}  # class k → channel
    s = torch.zeros(3, 6, 16, 16)
    for k, c in planted.items():
        s[:, c] = (labels == k).float()
    s[:, 1] = (labels == 0).float()  # background
    s[:, 3] = 1.0  # a channel that covers everything: overlaps every class, but Dice < 1
    s[:, 5, :4] = (labels[:, :4] == 2).float()  # part of class 2 only
    result = match_channels(s, labels, ["MYO", "LV", "RV"])
    assert result == {"MYO": 4, "LV": 0, "RV": 2}


def test_match_channels_ties_take_the_lowest_channel_and_absent_classes_raise() -> None:
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2] = 1
    s = torch.zeros(1, 3, 4, 4)
    s[0, 1] = (labels[0] == 1).float()
    s[0, 2] = (labels[0] == 1).float()
    assert match_channels(s, labels, ["MYO"]) == {"MYO": 1}
    assert match_channels(torch.zeros(1, 3, 4, 4), labels, ["MYO"]) == {"MYO": 0}
    with pytest.raises(ValueError, match="LV"):
        match_channels(s, labels, ["MYO", "LV"])


# ------------------------------------------------------------------------------------------------- z_interpolation


def test_z_interpolation_grid(model: SDNet, images: torch.Tensor) -> None:
    model.train()
    x = images[:1]
    grid = z_interpolation(model, x, steps=7)
    assert isinstance(grid, InterpolationGrid)
    assert model.training  # flag restored
    assert grid.images.shape == (N_Z, 7, SIZE, SIZE)
    assert grid.correlation.shape == grid.difference.shape == (N_Z, SIZE, SIZE)
    torch.testing.assert_close(grid.values, torch.linspace(-3, 3, 7))
    model.eval()
    with torch.no_grad():
        encoding = model.encode(x, sample=False)
        s, mu = encoding.anatomy, encoding.modality.mu
        torch.testing.assert_close(grid.mu, mu[0])
        torch.testing.assert_close(grid.reconstruction, model.decode(s, mu)[0, 0])
        for i in range(N_Z):
            z = mu.clone()
            z[0, i] = 0.0
            torch.testing.assert_close(grid.images[i, 3], model.decode(s, z)[0, 0])  # middle column: z_i = 0
            z[0, i] = 3.0
            torch.testing.assert_close(grid.images[i, -1], model.decode(s, z)[0, 0])
    assert not torch.equal(grid.images[0, 0], grid.images[0, -1])  # z_i does change the image
    assert float(grid.correlation.abs().max()) <= 1.0 and float(grid.correlation.abs().max()) > 0.0
    for i in range(N_Z):
        torch.testing.assert_close(grid.correlation[i], pearson_map(grid.values, grid.images[i]))
    torch.testing.assert_close(grid.difference, (grid.images[:, -1] - grid.images[:, 0]) / 2)
    assert float(grid.difference.abs().max()) <= 1.0


def test_z_interpolation_rejects_a_batch(model: SDNet, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="one single-channel image"):
        z_interpolation(model, images)


# ---------------------------------------------------------------------------------------------- channel_arithmetic


@pytest.mark.parametrize("training", [True, False])
def test_channel_arithmetic_decodes_edited_anatomy_with_mu(
    model: SDNet, images: torch.Tensor, training: bool
) -> None:
    model.train(training)
    channels = {"MYO": 1, "LV": 2}
    result = channel_arithmetic(model, images, channels, seed=5)
    assert model.training is training  # flag restored
    assert isinstance(result, ArithmeticResult)
    model.eval()
    with torch.no_grad():
        encoding = model.encode(images, sample=False)
        s, mu = encoding.anatomy, encoding.modality.mu
        permuted_s, permutation = permute_channels(s, torch.Generator().manual_seed(5))
        torch.testing.assert_close(result.image, images)
        torch.testing.assert_close(result.reconstruction, model.decode(s, mu))
        torch.testing.assert_close(result.moved, model.decode(move_channel(s, 1, 2), mu))
        torch.testing.assert_close(result.swapped, model.decode(swap_channels(s, 1, 2), mu))
        torch.testing.assert_close(result.permuted, model.decode(permuted_s, mu))
    assert torch.equal(result.permutation, permutation)
    for out in (result.reconstruction, result.moved, result.swapped, result.permuted):
        assert out.shape == (2, 1, SIZE, SIZE)
    assert (result.source, result.target, result.source_channel, result.target_channel) == ("MYO", "LV", 1, 2)


def test_channel_arithmetic_rejects_missing_or_shared_channels(model: SDNet, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="LV"):
        channel_arithmetic(model, images, {"MYO": 1})
    with pytest.raises(ValueError, match="share"):
        channel_arithmetic(model, images, {"MYO": 1, "LV": 1})


# ----------------------------------------------------------------------------------------------------- figures


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_write_png_files(model: SDNet, images: torch.Tensor, tmp_path: Path) -> None:
    result = channel_arithmetic(model, images, {"MYO": 0, "LV": 3})
    written = arithmetic_figure(result, tmp_path / "figures" / "fig7.png", title="arithmetic")
    assert written == tmp_path / "figures" / "fig7.png"
    _assert_png(written)
    grid = z_interpolation(model, images[:1], steps=5)
    written = interpolation_figure(grid, tmp_path / "nested" / "dir" / "fig8.png", title="z grid")
    assert written == tmp_path / "nested" / "dir" / "fig8.png"
    _assert_png(written)


def test_match_channels_gives_every_class_its_own_channel() -> None:
    """Two classes whose best channel is the same (a poorly trained model) still get distinct channels."""
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4] = 1  # MYO: top half
    labels[0, 4:6] = 2  # LV: two rows
    s = torch.zeros(1, 3, 8, 8)
    s[0, 0, :6] = 1.0  # covers MYO and LV: the best channel of both
    s[0, 2, 4:5] = 1.0  # half of LV
    result = match_channels(s, labels, ["MYO", "LV"])
    assert result == {"MYO": 0, "LV": 2}
    with pytest.raises(ValueError, match="only 3 anatomy channels"):
        match_channels(s, labels, ["A", "B", "C", "D"])
