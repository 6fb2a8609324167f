"""What to generate: :class:`PhantomConfig`, validated against the known modalities."""

from __future__ import annotations

from dataclasses import dataclass

from sdnet.data.phantom.render import MODALITY_RENDERERS

_MIN_IMAGE_SIZE = 32
_MIN_SLICES = 3
_MIN_PHASES = 2


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate.

    Attributes:
        n_subjects: number of subjects (``phantom_000`` ...).
        image_size: H = W of every slice, in pixels (>= 32).
        pixel_spacing_mm: in-plane voxel size (both axes), mm.
        slice_thickness_mm: through-plane voxel size, mm.
        n_slices: S, short-axis slices from base (0) to apex (S-1) (>= 3).
        n_phases: P, cardiac frames from ED (0) to ES (P-1) (>= 2).
        modalities: renderings to produce, names from :data:`MODALITY_RENDERERS` (``MR``, ``CT``, ``BOLD``).
        seed: base seed (>= 0); subject k uses generators seeded by ``(seed, k)``.
    """

    n_subjects: int = 40
    image_size: int = 96
    pixel_spacing_mm: float = 2.0
    slice_thickness_mm: float = 8.0
    n_slices: int = 8
    n_phases: int = 5
    modalities: tuple[str, ...] = ("MR", "CT")
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.modalities, tuple):  # accept a list (e.g. read back from phantom.json)
            object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.n_subjects < 1:
            raise ValueError(f"PhantomConfig.n_subjects must be >= 1, got {self.n_subjects}")
        if self.image_size < _MIN_IMAGE_SIZE:
            raise ValueError(f"PhantomConfig.image_size must be >= {_MIN_IMAGE_SIZE} pixels, got {self.image_size}")
        if not self.pixel_spacing_mm > 0:
            raise ValueError(f"PhantomConfig.pixel_spacing_mm must be > 0, got {self.pixel_spacing_mm}")
        if not self.slice_thickness_mm > 0:
            raise ValueError(f"PhantomConfig.slice_thickness_mm must be > 0, got {self.slice_thickness_mm}")
        if self.n_slices < _MIN_SLICES:
            raise ValueError(f"PhantomConfig.n_slices must be >= {_MIN_SLICES} (base, mid, apex), got {self.n_slices}")
        if self.n_phases < _MIN_PHASES:
            raise ValueError(f"PhantomConfig.n_phases must be >= {_MIN_PHASES} (ED and ES), got {self.n_phases}")
        if not self.modalities:
            raise ValueError("PhantomConfig.modalities must name at least one modality")
        unknown = [m for m in self.modalities if m not in MODALITY_RENDERERS]
        if unknown:
            raise ValueError(
                f"PhantomConfig.modalities: unknown modality {unknown}; known: {sorted(MODALITY_RENDERERS)}"
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"PhantomConfig.modalities has duplicates: {list(self.modalities)}")
        if self.seed < 0:
            raise ValueError(f"PhantomConfig.seed must be >= 0, got {self.seed}")
