"""From a :class:`~sdnet.config.DataConfig` to the tensors a training run needs.

``read volumes -> split subjects -> preprocess (normalise, crop) -> labelled / unlabelled / real-mask slice sets
and validation / test volumes``. Which subject feeds which set is decided only here, from the saved
:class:`~sdnet.data.splits.Split`, so leakage can be tested in one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdnet.config import DataConfig
from sdnet.data.orientation import LEGACY, InPlaneMap, model_frame
from sdnet.data.readers import READERS, reader_for, ssl4mis_split_lists
from sdnet.data.sampling import SliceSet
from sdnet.data.splits import Split, fixed_split, modality_blocks, split_subjects
from sdnet.data.transforms import center_crop_or_pad, normalise_intensity
from sdnet.data.volumes import DatasetInfo, Volume
from sdnet.errors import DataError, OutputError
from sdnet.metrics import area_percent
from sdnet.outputs import atomic_output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedVolume:
    """A preprocessed volume for evaluation: image (S, 1, H, W) in [−1, 1], label (S, H, W) class indices, the
    voxel size (dy, dx, dz) in mm of that grid (None when unknown) and its modality (``""`` when not given)."""

    subject_id: str
    phase: int
    image: torch.Tensor
    label: torch.Tensor
    spacing: tuple[float, float, float] | None
    source: str
    modality: str = ""

    @classmethod
    def from_preprocessed(cls, volume: PreprocessedVolume) -> PreparedVolume:
        """The evaluation form (tensors) of a labelled :class:`PreprocessedVolume`.

        Raises:
            DataError: the volume has no label.
        """
        if volume.label is None:
            raise DataError(f"{volume.source}: an unlabelled volume cannot be evaluated")
        return cls(subject_id=volume.subject_id, phase=volume.phase, image=torch.from_numpy(volume.image),
                   label=torch.from_numpy(volume.label), spacing=volume.spacing, source=volume.source,
                   modality=volume.modality)


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
        volume: the LV-volume multi-task's slices with volume labels (``areas``) and no masks, from the split's
            ``volume`` subjects (None without ``data.volume_subjects``).
        volume_class: class index of ``data.volume_class`` (None when the dataset has no such label).
    """

    info: DatasetInfo
    split: Split
    labelled: SliceSet
    unlabelled: SliceSet | None
    real_masks: SliceSet
    val: list[PreparedVolume]
    test: list[PreparedVolume]
    volume: SliceSet | None = None
    volume_class: int | None = None


def class_index(info: DatasetInfo, name: str) -> int | None:
    """The class index (0..L, background 0) of the label called ``name`` (case-insensitive), or None."""
    for index, value in enumerate(sorted(info.labels)):
        if info.labels[value].lower() == name.lower():
            return index
    return None


def read_volumes(config: DataConfig) -> tuple[DatasetInfo, list[Volume]]:
    """Read every volume of the dataset named by ``config`` (dispatch on ``config.format``), in the frame of
    ``config.orientation``: the convention, or an older frame mapped from it (:func:`sdnet.data.orientation.
    model_frame`) for checkpoints trained in one."""
    if not config.root:
        raise DataError("no dataset given: pass --data DIR (or set data.root in the config)")
    reader = reader_for(config.format)  # the registry in sdnet.data.readers.registry
    if not reader.multimodal and len(config.modalities) > 1:
        multimodal = " or ".join(name for name, entry in READERS.items() if entry.multimodal)
        raise DataError(f"data.modality={config.modality!r}: several modalities need a multi-modality dataset "
                        f"(format {multimodal}), not format {config.format!r}")
    if config.orientation == LEGACY:  # the readers' raw layouts (SSL4MIS arrays as stored) are what it saw
        return reader.read(config, False)
    info, volumes = reader.read(config, True)
    frame = model_frame(config.orientation, config.format)
    if frame is None or frame.is_identity:
        return info, volumes
    return info, [to_frame(volume, frame) for volume in volumes]


def to_frame(volume: Volume, frame: InPlaneMap) -> Volume:
    """``volume`` with its slices (image and label) mapped in-plane by ``frame``; spacing and affine follow."""
    shape = (int(volume.image.shape[1]), int(volume.image.shape[2]))
    return replace(
        volume, image=frame.apply(volume.image), label=None if volume.label is None else frame.apply(volume.label),
        spacing=frame.spacing(volume.spacing), affine=frame.affine(volume.affine, shape))


def remap_labels(label: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """Map dataset label values to contiguous class indices 0..L (background 0) in ascending value order."""
    values = sorted(info.labels)
    lut = np.zeros(max(values) + 1, dtype=np.int64)
    for index, value in enumerate(values):
        lut[value] = index
    out: np.ndarray = lut[label]
    return out


def _resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize (S, H, W) slices to ``size``: bilinear (anti-aliased when shrinking) images, nearest labels."""
    if tuple(image.shape[1:]) == size:
        return image, label
    shrink = size[0] < image.shape[1] or size[1] < image.shape[2]
    x = torch.from_numpy(np.ascontiguousarray(image))[:, None]  # (S, 1, H, W)
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)[:, 0].numpy()
    new_label = None
    if label is not None:
        y = torch.from_numpy(np.ascontiguousarray(label))[:, None].to(torch.float32)
        new_label = F.interpolate(y, size=size, mode="nearest-exact")[:, 0].round().to(torch.int64).numpy()
    return out, new_label


def preprocess_volume(
    volume: Volume, info: DatasetInfo, image_size: int, config: DataConfig | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The authors' preprocessing (authors-code §1.12), each step a :class:`DataConfig` value.

    1. in-plane resampling to ``target_spacing_mm`` (skipped when 0 or when the spacing is unknown);
    2. clipping to the ``clip_low``–``clip_high`` percentiles of the volume and scaling to [−1, 1];
    3. optional resize of every slice to ``resize`` × ``resize``;
    4. centre crop/pad to ``image_size`` (pad value −1 for images, background for labels);
    5. label values remapped to class indices 0..L.

    Returns:
        image (S, 1, size, size) float32 and label (S, size, size) int64 class indices or None.
    """
    cfg = config or DataConfig(target_spacing_mm=0.0)
    image, label = volume.image, volume.label
    if cfg.target_spacing_mm > 0 and volume.spacing is not None:
        dy, dx = volume.spacing[0], volume.spacing[1]
        size = (max(1, round(image.shape[1] * dy / cfg.target_spacing_mm)),
                max(1, round(image.shape[2] * dx / cfg.target_spacing_mm)))
        image, label = _resize(image, label, size)
    image = normalise_intensity(image, low=cfg.clip_low, high=cfg.clip_high, source=volume.source)
    if cfg.resize > 0:
        image, label = _resize(image, label, (cfg.resize, cfg.resize))
    image = center_crop_or_pad(image, image_size, pad_value=-1.0)[:, None]
    out_label = None
    if label is not None:
        out_label = center_crop_or_pad(remap_labels(label, info), image_size, pad_value=0)
    return image.astype(np.float32), out_label


def effective_spacing(volume: Volume, config: DataConfig) -> tuple[float, float, float] | None:
    """Voxel size (dy, dx, dz) in mm of a volume after :func:`preprocess_volume` (None when unknown)."""
    if volume.spacing is None:
        return None
    dy, dx, dz = volume.spacing
    h, w = volume.image.shape[1:]
    if config.target_spacing_mm > 0:
        nh = max(1, round(h * dy / config.target_spacing_mm))
        nw = max(1, round(w * dx / config.target_spacing_mm))
        dy, dx, h, w = h * dy / nh, w * dx / nw, nh, nw
    if config.resize > 0:
        dy, dx = dy * h / config.resize, dx * w / config.resize
    return (float(dy), float(dx), float(dz))


@dataclass(frozen=True)
class PreprocessedVolume:
    """A volume after :func:`preprocess_volume`: image (S, 1, H, W) float32 in [−1, 1], label (S, H, W) class
    indices or None, its voxel size after preprocessing (None when unknown), where it came from and its
    modality."""

    subject_id: str
    phase: int
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float] | None
    source: str
    modality: str = ""


_CACHE_VERSION = 5  # 3: volumes carry their modality; 4: data.orientation; 5: the RAS convention (issue 23)


def _cache_path(config: DataConfig, image_size: int) -> Path | None:
    if config.cache_dir.lower() == "none":
        return None
    base = Path(config.cache_dir) if config.cache_dir else Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sdnet"
    root = Path(config.root).resolve()
    stamp = max((p.stat().st_mtime_ns for p in [root, *root.iterdir()]), default=0) if root.is_dir() else 0
    key = {
        "version": _CACHE_VERSION, "root": str(root), "stamp": stamp, "image_size": image_size,
        **{k: v for k, v in asdict(config).items()
           if k in ("format", "modality", "labelled_phases", "target_spacing_mm", "resize", "clip_low", "clip_high",
                    "subject_pattern", "use_unlabelled", "unlabelled_frames", "orientation")},
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return base / f"{config.format}-{digest}.npz"


def load_preprocessed(config: DataConfig, image_size: int) -> tuple[DatasetInfo, list[PreprocessedVolume]]:
    """Read and preprocess every volume, through an on-disk cache keyed by the preprocessing settings.

    The cache file name is a hash of the dataset folder (and its modification time), the preprocessing values of
    ``config`` and ``image_size``; a change of any of them builds a new cache file.
    """
    path = _cache_path(config, image_size)
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                info = DatasetInfo(name=meta["name"], labels={int(k): v for k, v in meta["labels"].items()},
                                   modalities=tuple(meta["modalities"]))
                volumes: list[PreprocessedVolume] = [
                    PreprocessedVolume(
                        subject_id=v["subject_id"], phase=v["phase"], image=z[f"image_{i}"],
                        label=z[f"label_{i}"].astype(np.int64) if v["labelled"] else None,
                        spacing=tuple(v["spacing"]) if v["spacing"] else None,
                        source=v["source"], modality=v["modality"],
                    )
                    for i, v in enumerate(meta["volumes"])
                ]
            log.info("loaded %d preprocessed volumes from cache %s", len(volumes), path)
            return info, volumes
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable cache %s (%s)", path, exc)
    info, raw = read_volumes(config)
    if config.target_spacing_mm > 0 and raw and all(v.spacing is None for v in raw):
        log.warning("%s: voxel spacing unknown; in-plane resampling to %.2f mm skipped", config.root,
                    config.target_spacing_mm)
    volumes = []
    for v in raw:
        image, label = preprocess_volume(v, info, image_size, config)
        volumes.append(PreprocessedVolume(subject_id=v.subject_id, phase=v.phase, image=image, label=label,
                                          spacing=effective_spacing(v, config), source=v.source,
                                          modality=v.modality))
    if path is not None:
        try:
            meta = {"name": info.name, "labels": {str(k): n for k, n in info.labels.items()},
                    "modalities": list(info.modalities),
                    "volumes": [{"subject_id": p.subject_id, "phase": p.phase, "labelled": p.label is not None,
                                 "spacing": list(p.spacing) if p.spacing else None, "source": p.source,
                                 "modality": p.modality}
                                for p in volumes]}
            arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
            for i, p in enumerate(volumes):
                arrays[f"image_{i}"] = p.image
                if p.label is not None:
                    arrays[f"label_{i}"] = p.label.astype(np.uint8)
            with atomic_output(path) as tmp:  # the temporary name ends in .npz, so np.savez keeps it
                np.savez(tmp, **arrays)  # type: ignore[arg-type]
        except (OSError, OutputError) as exc:  # the cache is an optimisation: a read-only or full cache folder
            log.warning("could not write preprocessing cache %s (%s)", path, exc)  # only costs time
    return info, volumes


def _stack(items: list[tuple[np.ndarray, np.ndarray | None, str]]) -> SliceSet:
    images = torch.from_numpy(np.concatenate([i for i, _, _ in items])) if items else torch.zeros(0, 1, 1, 1)
    masks = None
    if items and all(m is not None for _, m, _ in items):
        masks = torch.from_numpy(np.concatenate([m for _, m, _ in items if m is not None]))
    ids = tuple(sid for i, _, sid in items for _ in range(i.shape[0]))
    return SliceSet(images=images, masks=masks, subject_ids=ids)


def _cap_evenly(items: list[tuple[np.ndarray, None, str]], cap: int) -> list[tuple[np.ndarray, None, str]]:
    """Keep exactly ``min(cap, total)`` slices, spread over the volumes in proportion to their size (largest
    remainders first) and evenly spaced within each volume (authors: max_ul_images sampled per volume)."""
    sizes = np.array([i.shape[0] for i, _, _ in items])
    total = int(sizes.sum()) if items else 0
    if total <= cap:
        return items
    share = sizes * (cap / total)
    keep = np.floor(share).astype(int)
    for index in np.argsort(-(share - keep), kind="stable")[: cap - int(keep.sum())]:
        keep[index] += 1
    out: list[tuple[np.ndarray, None, str]] = []
    for (image, _, sid), k in zip(items, keep, strict=True):
        if k > 0:
            sel = np.linspace(0, image.shape[0] - 1, int(k)).round().astype(int)
            out.append((image[sel], None, sid))
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
    info, volumes = load_preprocessed(config, image_size)
    if not volumes:
        raise DataError(f"{config.root}: the dataset contains no volumes")
    if info.n_classes != n_classes:
        raise DataError(
            f"{config.root}: dataset has {info.n_classes} classes ({info.labels}) but model.n_classes={n_classes}"
        )
    if split is not None:  # a saved split (evaluation, resume): every subject it names must still be there
        missing = sorted({*split.labelled, *split.train, *split.val, *split.test} - {v.subject_id for v in volumes})
        if missing:
            raise DataError(f"{config.root}: {len(missing)} subject(s) of the run's saved split are not in this "
                            f"data folder (e.g. {', '.join(missing[:3])}); it changed since training, "
                            "or --data names another dataset")
    if split is None and config.split == "ssl4mis":
        lists = ssl4mis_split_lists(config.root)
        split = fixed_split(lists["train"], lists["val"], lists["test"], labelled_fraction=config.labelled_fraction,
                            labelled_subjects=config.labelled_subjects, seed=config.split_seed)
    if split is None:
        split = split_subjects(
            [v.subject_id for v in volumes],
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            labelled_fraction=config.labelled_fraction,
            labelled_subjects=config.labelled_subjects,
            seed=config.split_seed,
            fold=config.fold,
        )
    volume_class = class_index(info, config.volume_class)
    if config.volume_subjects > 0:
        if volume_class is None:
            raise DataError(f"data.volume_class={config.volume_class!r} is not a label of {config.root} "
                            f"({sorted(info.labels.values())})")
        split = split.with_volume_subjects(config.volume_subjects, seed=config.split_seed)
    labelled_ids, train_ids, volume_ids = set(split.labelled), set(split.train), set(split.volume)
    with_volume: list[tuple[np.ndarray, np.ndarray, str]] = []
    blocks = modality_blocks(split.train, config.mix(), seed=config.split_seed) if config.mix() else None
    # validation picks best.pt: only in the modalities the mixture trains on, never on an unseen one
    val_modalities = None if blocks is None else {m for m, ids in blocks.items() if ids}
    labelled: list[tuple[np.ndarray, np.ndarray | None, str]] = []
    unlabelled: list[tuple[np.ndarray, None, str]] = []
    all_train_masks: list[tuple[np.ndarray, np.ndarray | None, str]] = []
    val: list[PreparedVolume] = []
    test: list[PreparedVolume] = []
    for volume in volumes:
        sid = volume.subject_id
        image, label = volume.image, volume.label
        if sid in train_ids:
            if blocks is not None and sid not in blocks.get(volume.modality, ()):
                continue  # this subject's images of this modality are not part of the mixture
            if label is not None:
                all_train_masks.append((image, label, sid))
            if sid in volume_ids and label is not None:
                with_volume.append((image, label, sid))
            if sid in labelled_ids and label is not None:
                labelled.append((image, label, sid))
            else:  # other phases of labelled subjects; every phase of unlabelled subjects, masks withheld
                unlabelled.append((image, None, sid))
        elif sid in split.test and label is not None:
            test.append(PreparedVolume.from_preprocessed(volume))
        elif sid in split.val and label is not None and (val_modalities is None or volume.modality in val_modalities):
            val.append(PreparedVolume.from_preprocessed(volume))
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
    volume_set = None
    if with_volume and volume_class is not None:
        stacked = _stack(with_volume)  # type: ignore[arg-type]
        assert stacked.masks is not None
        areas = area_percent(stacked.masks, volume_class)
        volume_set = SliceSet(images=stacked.images, masks=None, subject_ids=stacked.subject_ids, areas=areas)
    return TrainingData(
        info=info, split=split, labelled=labelled_set, unlabelled=unlabelled_set, real_masks=real, val=val, test=test,
        volume=volume_set, volume_class=volume_class,
    )


def save_split(split: Split, run_dir: str | Path) -> Path:
    path = Path(run_dir) / "split.json"
    split.to_json(path)
    return path
