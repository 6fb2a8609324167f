import math

import pytest
import torch

from sdnet.config import LossWeights
from sdnet.losses import (
    dice_loss,
    kl_divergence,
    l1_reconstruction,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    weighted_sum,
    z_reconstruction,
)


def test_dice_loss_golden_value():
    p = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    t = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # intersection 1, sum 3 -> 1 - 2 * 1.1 / 3.1
    assert dice_loss(p, t).item() == pytest.approx(1 - 2 * 1.1 / 3.1)


def test_dice_loss_pools_channels_and_averages_batch():
    p = torch.zeros(2, 2, 2, 2)
    t = torch.zeros(2, 2, 2, 2)
    p[0, 0, 0, 0] = t[0, 0, 0, 0] = 1.0  # sample 0: perfect on one pixel
    t[1, 1, 1, 1] = 1.0  # sample 1: missed
    expected = 1 - 2 * ((1.1 / 2.1) + (0.1 / 1.1)) / 2
    assert dice_loss(p, t).item() == pytest.approx(expected)


def test_dice_loss_perfect_is_slightly_negative_and_rejects_mismatch():
    t = torch.ones(1, 1, 2, 2)
    assert dice_loss(t, t).item() == pytest.approx(1 - 2 * 4.1 / 8.1, abs=1e-6)
    assert dice_loss(t, t).item() < 0
    with pytest.raises(ValueError):
        dice_loss(torch.ones(1, 2, 2, 2), t)


def test_kl_golden_value():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    assert kl_divergence(mu, logvar).item() == pytest.approx(-0.5 * (-1 + math.log(2.0) - 1))
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_l1_terms_golden_values():
    x = torch.tensor([[[[0.5, -0.5]]]])
    y = torch.tensor([[[[0.0, 0.5]]]])
    assert l1_reconstruction(x, y).item() == pytest.approx(0.75)
    assert z_reconstruction(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])).item() == pytest.approx(1.5)


def test_lsgan_golden_values():
    real = torch.tensor([[1.0], [0.5]])
    fake = torch.tensor([[0.0], [0.5]])
    assert lsgan_discriminator_loss(real, fake).item() == pytest.approx(0.25)
    assert lsgan_generator_loss(fake).item() == pytest.approx(0.625)


def test_weighted_sum_uses_paper_lambdas():
    one = torch.tensor(1.0)
    terms = {"kl": one, "segm": one, "adv": one, "rec": one, "zrec": one}
    assert weighted_sum(terms, LossWeights()).item() == pytest.approx(0.01 + 10 + 10 + 1 + 1)
    assert weighted_sum({"rec": torch.tensor(2.0)}, LossWeights(rec=3.0)).item() == pytest.approx(6.0)
    with pytest.raises(KeyError):
        weighted_sum({"bogus": one}, LossWeights())


def test_cross_entropy_golden_value_and_weight():
    import math

    from sdnet.losses import cross_entropy

    logits = torch.zeros(1, 2, 1, 1)
    logits[0, 1] = math.log(3.0)  # p(class 1) = 3/4
    masks = torch.ones(1, 1, 1, dtype=torch.long)
    assert cross_entropy(logits, masks).item() == pytest.approx(-math.log(0.75))
    assert LossWeights().ce == 0.0
    assert weighted_sum({"ce": torch.tensor(2.0)}, LossWeights(ce=0.5)).item() == pytest.approx(1.0)
