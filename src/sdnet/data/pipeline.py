"""From a :class:`~sdnet.config.DataConfig` to the tensors a training run needs.

``read volumes -> split subjects -> preprocess (normalise, crop) -> labelled / unlabelled / real-mask slice sets
and validation / test volumes``. Which subject feeds which set is decided only here, from the saved
:class:`~sdnet.data.splits.Split`, so leakage can be tested in one place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sdnet.config import DataConfig
from sdnet.data.sampling import SliceSet
from sdnet.data.splits import Split, split_subjects
from sdnet.data.transforms import center_crop_or_pad, normalise_intensity
from sdnet.data.volumes import DatasetInfo, Volume, read_phantom
from sdnet.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedVolume:
    """A preprocessed volume for evaluation: image (S, 1, H, W) in [−1, 1], label (S, H, W) class indices."""

    subject_id: str
    phase: int
    image: torch.Tensor
    label: torch.Tensor
    spacing: tuple[float, float, float] | None
    source: str


@dataclass(frozen=True)
class TrainingData:
    """Everything the trainer consumes.

    Attributes:
        info: dataset description (labels, modalities).
        split: the subject split.
        labelled: labelled training slices.
        unlabelled: unlabelled training slices (None when ``use_unlabelled`` is off or the pool is empty).
        real_masks: masks shown to the discriminator as "real".
        val, test: preprocessed labelled volumes of the validation and test subjects.
    """

    info: DatasetInfo
    split: Split
    labelled: SliceSet
    unlabelled: SliceSet | None
    real_masks: SliceSet
    val: list[PreparedVolume]
    test: list[PreparedVolume]


def read_volumes(config: DataConfig) -> tuple[DatasetInfo, list[Volume]]:
    """Read every volume of the dataset named by ``config`` (dispatch on ``config.format``)."""
    if not config.root:
        raise DataError("no dataset given: pass --data DIR (or set data.root in the config)")
    if config.format == "phantom":
        return read_phantom(config.root, modality=config.modality, labelled_phases=config.labelled_phases)
    raise DataError(f"unknown data.format {config.format!r}")


def remap_labels(label: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """Map dataset label values to contiguous class indices 0..L (background 0) in ascending value order."""
    values = sorted(info.labels)
    lut = np.zeros(max(values) + 1, dtype=np.int64)
    for index, value in enumerate(values):
        lut[value] = index
    out: np.ndarray = lut[label]
    return out


def preprocess_volume(volume: Volume, info: DatasetInfo, image_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise to [−1, 1] and centre crop/pad to ``image_size``.

    Returns:
        image (S, 1, size, size) float32 and label (S, size, size) int64 class indices or None.
    """
    image = normalise_intensity(volume.image, source=volume.source)
    image = center_crop_or_pad(image, image_size, pad_value=-1.0)[:, None]
    label = None
    if volume.label is not None:
        label = center_crop_or_pad(remap_labels(volume.label, info), image_size, pad_value=0)
    return image, label


def _stack(items: list[tuple[np.ndarray, np.ndarray | None, str]]) -> SliceSet:
    images = torch.from_numpy(np.concatenate([i for i, _, _ in items])) if items else torch.zeros(0, 1, 1, 1)
    masks = None
    if items and all(m is not None for _, m, _ in items):
        masks = torch.from_numpy(np.concatenate([m for _, m, _ in items if m is not None]))
    ids = tuple(sid for i, _, sid in items for _ in range(i.shape[0]))
    return SliceSet(images=images, masks=masks, subject_ids=ids)


def _cap_evenly(items: list[tuple[np.ndarray, None, str]], cap: int) -> list[tuple[np.ndarray, None, str]]:
    """Keep at most ``cap`` slices, taken evenly from every volume (authors: max_ul_images sampled per volume)."""
    total = sum(i.shape[0] for i, _, _ in items)
    if total <= cap or not items:
        return items
    keep_fraction = cap / total
    out: list[tuple[np.ndarray, None, str]] = []
    budget = cap
    for image, _, sid in items:
        k = min(budget, max(1, int(image.shape[0] * keep_fraction)))
        if k <= 0:
            break
        sel = np.linspace(0, image.shape[0] - 1, k).round().astype(int)
        out.append((image[sel], None, sid))
        budget -= k
    return out


def prepare_data(config: DataConfig, *, image_size: int, n_classes: int, split: Split | None = None) -> TrainingData:
    """Read, split and preprocess the dataset.

    Args:
        config: data section of the run config.
        image_size: the model's input size.
        n_classes: the model's number of classes (L + 1); must match the dataset.
        split: reuse a saved split (resume, evaluation) instead of drawing one.

    Raises:
        DataError: empty dataset, no labelled training images, label count mismatch, ...
    """
    info, volumes = read_volumes(config)
    if not volumes:
        raise DataError(f"{config.root}: the dataset contains no volumes")
    if info.n_classes != n_classes:
        raise DataError(
            f"{config.root}: dataset has {info.n_classes} classes ({info.labels}) but model.n_classes={n_classes}"
        )
    if split is None:
        split = split_subjects(
            [v.subject_id for v in volumes],
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            labelled_fraction=config.labelled_fraction,
            labelled_subjects=config.labelled_subjects,
            seed=config.split_seed,
        )
    labelled_ids, train_ids = set(split.labelled), set(split.train)
    labelled: list[tuple[np.ndarray, np.ndarray | None, str]] = []
    unlabelled: list[tuple[np.ndarray, None, str]] = []
    all_train_masks: list[tuple[np.ndarray, np.ndarray | None, str]] = []
    val: list[PreparedVolume] = []
    test: list[PreparedVolume] = []
    for volume in volumes:
        sid = volume.subject_id
        if sid in train_ids:
            image, label = preprocess_volume(volume, info, image_size)
            if label is not None:
                all_train_masks.append((image, label, sid))
            if sid in labelled_ids and label is not None:
                labelled.append((image, label, sid))
            else:  # other phases of labelled subjects; every phase of unlabelled subjects, masks withheld
                unlabelled.append((image, None, sid))
        elif sid in split.val or sid in split.test:
            if volume.label is None:
                continue
            image, label = preprocess_volume(volume, info, image_size)
            assert label is not None
            prepared = PreparedVolume(
                subject_id=sid,
                phase=volume.phase,
                image=torch.from_numpy(image),
                label=torch.from_numpy(label),
                spacing=volume.spacing,
                source=volume.source,
            )
            (val if sid in split.val else test).append(prepared)
    if not labelled:
        raise DataError(f"{config.root}: no labelled training images (labelled subjects: {list(split.labelled)})")
    unlabelled_set = None
    if config.use_unlabelled:
        capped = _cap_evenly(unlabelled, config.max_unlabelled)
        if capped:
            unlabelled_set = _stack(capped)  # type: ignore[arg-type]
        else:
            log.warning("no unlabelled images available: training is fully supervised")
    labelled_set = _stack(labelled)
    real = labelled_set if config.discriminator_masks == "labelled" else _stack(all_train_masks)
    return TrainingData(
        info=info, split=split, labelled=labelled_set, unlabelled=unlabelled_set, real_masks=real, val=val, test=test
    )


def save_split(split: Split, run_dir: str | Path) -> Path:
    path = Path(run_dir) / "split.json"
    split.to_json(path)
    return path
