"""Augmentation transforms: the square symmetries are exact, paired and seeded."""

from __future__ import annotations

import pytest
import torch

from sdnet.data.sampling import BatchStream, SliceSet
from sdnet.data.transforms import dihedral


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
