"""Stateless, seeded batch streams for the semi-supervised schedule.

A stream's i-th batch is a pure function of (seed, stream name, i): each pass over the data is a fresh permutation
drawn from a generator seeded by (seed, stream, pass). Nothing has to be saved to resume a run exactly: the trainer
just asks for batch ``step`` again.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from sdnet.data.transforms import dihedral, intensity, rotate


@dataclass(frozen=True)
class SliceSet:
    """Preprocessed 2D slices held in memory.

    Attributes:
        images: (N, 1, H, W) float32 in [−1, 1].
        masks: (N, H, W) int64 class indices in [0, n_classes), or None for unlabelled images.
        subject_ids: (N,) subject of each slice.
        areas: (N,) float32 LV area of each slice in percent of its pixels (volume labels of the LV-volume
            multi-task, paper §5.2), or None.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    subject_ids: tuple[str, ...]
    areas: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _stream_seed(seed: int, name: str, index: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 7919 + index) % (2**63 - 1)


class BatchStream:
    """Endless shuffled batches from a :class:`SliceSet`, optionally rotated.

    Args:
        data: the slices.
        batch_size: images per batch.
        seed: run seed.
        name: stream name (``labelled``, ``unlabelled``, ``real_masks``) so streams are independent.
        max_rotation: maximum absolute rotation in degrees (0 disables augmentation).
        flip: also apply a random square symmetry (rot90 by k, optional flip) per image.
        intensity_strength: random gamma and contrast per image (:func:`~sdnet.data.transforms.intensity`; 0 = off).
        shard: ``(rank, world_size)`` of a data-parallel run: :meth:`batch` returns this process' contiguous
            ``batch_size / world_size`` images of the global batch (the same images, rotations and flips as the
            global batch of one process); ``(0, 1)`` = the whole batch.
    """

    def __init__(self, data: SliceSet, *, batch_size: int, seed: int, name: str, max_rotation: float = 0.0,
                 flip: bool = False, intensity_strength: float = 0.0, shard: tuple[int, int] = (0, 1)) -> None:
        if len(data) == 0:
            raise ValueError(f"stream {name!r} has no images")
        rank, world = shard
        if world < 1 or not 0 <= rank < world or batch_size % world:
            raise ValueError(f"stream {name!r}: batch size {batch_size} does not split over {world} processes")
        self.shard = shard
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.name = name
        self.max_rotation = max_rotation
        self.flip = flip
        self.intensity_strength = intensity_strength
        self._cache: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            rng = np.random.default_rng(_stream_seed(self.seed, self.name, epoch))
            self._cache[epoch] = rng.permutation(len(self.data))
        return self._cache[epoch]

    def indices(self, step: int) -> np.ndarray:
        """Dataset indices of batch ``step`` (B,)."""
        n = len(self.data)
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        return np.array([self._permutation(int(p // n))[int(p % n)] for p in positions])

    def _mine(self, values: torch.Tensor) -> torch.Tensor:
        """This process' part of a global-batch tensor (B, ...)."""
        rank, world = self.shard
        per = self.batch_size // world
        return values[rank * per : (rank + 1) * per]

    def areas(self, step: int) -> torch.Tensor:
        """Volume labels of batch ``step`` (B,) (the slices of :meth:`batch`; rotations and flips keep an area up
        to the pixels a rotation moves out of the crop)."""
        if self.data.areas is None:
            raise ValueError(f"stream {self.name!r} has no volume labels")
        return self.data.areas[self._mine(torch.from_numpy(self.indices(step)))]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Batch ``step``: images (B, 1, H, W) and masks (B, H, W) or None (B = this process' share)."""
        full = torch.from_numpy(self.indices(step))
        idx = self._mine(full)
        images = self.data.images[idx]
        masks = self.data.masks[idx] if self.data.masks is not None else None
        if self.max_rotation > 0:  # drawn for the global batch, so every image gets the same angle on any shard
            gen = torch.Generator().manual_seed(_stream_seed(self.seed, self.name + "/rotation", step))
            angles = (torch.rand(len(full), generator=gen) * 2 - 1) * self.max_rotation
            images, masks = rotate(images, masks, self._mine(angles))
        if self.flip:
            gen = torch.Generator().manual_seed(_stream_seed(self.seed, self.name + "/flip", step))
            images, masks = dihedral(images, masks, self._mine(torch.randint(0, 8, (len(full),), generator=gen)))
        if self.intensity_strength > 0:
            gen = torch.Generator().manual_seed(_stream_seed(self.seed, self.name + "/intensity", step))
            draws = torch.rand(len(full), 2, generator=gen) * 2 - 1
            images = intensity(images, self.intensity_strength, self._mine(draws))
        return images, masks
