"""Augmentation transforms: the square symmetries are exact, paired and seeded."""

from __future__ import annotations

import math

import pytest
import torch

from sdnet.data.sampling import BatchStream, SliceSet
from sdnet.data.transforms import dihedral, intensity


def _asymmetric(batch: int, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.arange(batch * size * size, dtype=torch.float32).reshape(batch, 1, size, size)
    masks = (images[:, 0] % 4).to(torch.int64)
    return images, masks


def test_the_eight_symmetries_are_distinct_and_exact() -> None:
    images, masks = _asymmetric(8)
    one = images[:1].expand(8, -1, -1, -1).clone()
    out, out_masks = dihedral(one, masks[:1].expand(8, -1, -1).clone(), torch.arange(8))
    flat = {tuple(o.flatten().tolist()) for o in out}
    assert len(flat) == 8  # every code is a different symmetry
    assert sorted(out[3].flatten().tolist()) == sorted(images[0].flatten().tolist())  # a permutation of pixels
    assert torch.equal(out[0], images[0])  # code 0 is the identity
    assert torch.equal(out[1, 0], torch.rot90(images[0, 0], 1))
    assert torch.equal(out[4, 0], images[0, 0].flip(-1))
    assert out_masks is not None
    assert torch.equal(out_masks, (out[:, 0] % 4).to(torch.int64))  # masks follow their images pixel for pixel


def test_dihedral_refuses_non_square_images() -> None:
    with pytest.raises(ValueError, match="square"):
        dihedral(torch.zeros(1, 1, 4, 6), None, torch.zeros(1, dtype=torch.int64))


def test_stream_flips_are_seeded_per_step() -> None:
    images, masks = _asymmetric(6)
    data = SliceSet(images=images, masks=masks, subject_ids=("a",) * 6)
    a = BatchStream(data, batch_size=3, seed=5, name="labelled", flip=True)
    b = BatchStream(data, batch_size=3, seed=5, name="labelled", flip=True)
    plain = BatchStream(data, batch_size=3, seed=5, name="labelled")
    xa, ma = a.batch(7)
    xb, mb = b.batch(7)
    assert torch.equal(xa, xb) and ma is not None and mb is not None and torch.equal(ma, mb)
    flipped = [not torch.equal(a.batch(s)[0], plain.batch(s)[0]) for s in range(6)]
    assert any(flipped)  # with 8 symmetries some of 18 images must change
    assert torch.equal(ma, (xa[:, 0] % 4).to(torch.int64))


def test_intensity_changes_gamma_and_contrast_within_range_and_keeps_the_masks() -> None:
    ramp = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8).expand(4, -1, -1, -1).clone()
    assert torch.equal(intensity(ramp, 0.0, torch.zeros(4, 2)), ramp)  # strength 0: unchanged
    assert torch.allclose(intensity(ramp, 0.5, torch.zeros(4, 2)), ramp, atol=1e-6)  # γ = c = 1: unchanged
    out = intensity(ramp, 0.5, torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    assert out.min() >= -1 and out.max() <= 1
    unit = (ramp[0] + 1) / 2
    assert torch.allclose(out[0], 2 * unit.pow(math.exp(0.5)) - 1, atol=1e-5)  # γ > 1 darkens the mid-tones
    assert (out[1] >= ramp[1] - 1e-6).all() and (out[1] > ramp[1]).any()  # γ < 1 brightens them
    assert out[2].std() > ramp[2].std() > out[3].std()  # contrast up, contrast down
    images, masks = _asymmetric(6)
    data = SliceSet(images=images / images.max() * 2 - 1, masks=masks, subject_ids=("a",) * 6)
    a = BatchStream(data, batch_size=3, seed=5, name="labelled", intensity_strength=0.5)
    plain = BatchStream(data, batch_size=3, seed=5, name="labelled")
    (xa, ma), (xp, mp) = a.batch(2), plain.batch(2)
    assert torch.equal(xa, a.batch(2)[0])  # seeded per step: a resumed run sees the same batch
    assert not torch.equal(xa, xp) and ma is not None and mp is not None and torch.equal(ma, mp)
