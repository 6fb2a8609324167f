from pathlib import Path

import numpy as np
import pytest

from sdnet.config import DataConfig
from sdnet.data.pipeline import prepare_data
from sdnet.data.volumes import read_phantom


def test_read_phantom_volumes(tiny_phantom: Path):
    info, volumes = read_phantom(tiny_phantom, modality="MR")
    assert info.labels == {0: "background", 1: "RV", 2: "MYO", 3: "LV"} and info.n_classes == 4
    assert len(volumes) == 8 * 3
    assert {v.phase for v in volumes if v.label is not None} == {0, 2}  # ED and ES only
    v = volumes[0]
    assert v.image.shape == (3, 32, 32) and v.label is not None and v.label.shape == (3, 32, 32)
    assert v.spacing == (pytest.approx(2.0), pytest.approx(2.0), pytest.approx(8.0))


def test_prepare_data_never_leaks_subjects(tiny_phantom: Path):
    cfg = DataConfig(root=str(tiny_phantom), labelled_subjects=2, val_fraction=0.25, test_fraction=0.25,
                     cache_dir="none")
    d = prepare_data(cfg, image_size=32, n_classes=4)
    s = d.split
    assert set(d.labelled.subject_ids) == set(s.labelled)
    assert d.unlabelled is not None and set(d.unlabelled.subject_ids) <= set(s.train)
    held_out = set(s.val) | set(s.test)
    assert not held_out & (set(d.labelled.subject_ids) | set(d.unlabelled.subject_ids) | set(d.real_masks.subject_ids))
    assert {v.subject_id for v in d.test} == set(s.test) and {v.subject_id for v in d.val} == set(s.val)
    # default (paper, authors): D's real masks come from every training subject, never from val/test subjects
    assert set(d.real_masks.subject_ids) == set(s.train)
    assert len(d.real_masks) > len(d.labelled)
    strict = prepare_data(DataConfig(**{**cfg.__dict__, "discriminator_masks": "labelled"}), image_size=32,
                          n_classes=4)
    assert set(strict.real_masks.subject_ids) == set(strict.split.labelled)
    assert d.labelled.images.min() >= -1 and d.labelled.images.max() <= 1
    assert d.labelled.masks is not None and set(np.unique(d.labelled.masks.numpy())) <= {0, 1, 2, 3}


def test_fully_supervised_and_unpaired_masks(tiny_phantom: Path):
    cfg = DataConfig(root=str(tiny_phantom), labelled_subjects=1, use_unlabelled=False, cache_dir="none",
                     discriminator_masks="training", val_fraction=0.25, test_fraction=0.25)
    d = prepare_data(cfg, image_size=32, n_classes=4)
    assert d.unlabelled is None
    assert set(d.real_masks.subject_ids) == set(d.split.train)


def _volume(label: np.ndarray, spacing=(1.0, 1.0, 5.0)):
    from sdnet.data.volumes import Volume

    rng = np.random.default_rng(0)
    image = (label * 100 + rng.normal(0, 5, label.shape)).astype(np.float32)
    return Volume(subject_id="s", phase=0, image=image, label=label.astype(np.int64), spacing=spacing,
                  affine=np.eye(4), modality="MR", source="mem")


def test_preprocessing_keeps_the_label_set_and_resamples():
    from sdnet.data.pipeline import preprocess_volume
    from sdnet.data.volumes import DatasetInfo

    info = DatasetInfo(name="t", labels={0: "bg", 1: "RV", 2: "MYO", 3: "LV"}, modalities=("MR",))
    label = np.zeros((2, 60, 50), dtype=np.int64)
    label[:, 20:30, 10:20] = 1
    label[:, 25:40, 25:40] = 2
    label[:, 29:36, 29:36] = 3
    cfg = DataConfig(target_spacing_mm=1.37)
    image, out = preprocess_volume(_volume(label), info, 64, cfg)
    assert image.shape == (2, 1, 64, 64) and out is not None and out.shape == (2, 64, 64)
    assert image.min() >= -1 and image.max() <= 1
    assert set(np.unique(out)) == set(np.unique(label))
    # 60 x 50 px at 1 mm -> 44 x 36 px at 1.37 mm, padded to 64: the LV area shrinks by ~1.37^2
    assert (out == 3).sum() == pytest.approx((label == 3).sum() / 1.37**2, rel=0.25)
    # the documented crop is the only way to lose a label: crop the LV away
    label2 = np.zeros((1, 100, 100), dtype=np.int64)
    label2[0, 45:55, 45:55] = 1
    label2[0, 0:5, 0:5] = 3
    _, cropped = preprocess_volume(_volume(label2), info, 64, DataConfig(target_spacing_mm=0))
    assert cropped is not None and set(np.unique(cropped)) == {0, 1}


def test_preprocessing_cache_is_reused_and_rebuilt_on_config_change(tiny_phantom: Path, tmp_path: Path):
    from sdnet.data.pipeline import load_preprocessed

    cfg = DataConfig(root=str(tiny_phantom), cache_dir=str(tmp_path), target_spacing_mm=0)
    _, first = load_preprocessed(cfg, 32)
    files = list(tmp_path.glob("phantom-*.npz"))
    assert len(files) == 1
    _, second = load_preprocessed(cfg, 32)
    assert len(second) == len(first)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, second, strict=True))
    assert all((a.label is None) == (b.label is None) for a, b in zip(first, second, strict=True))
    assert all(a.label is None or np.array_equal(a.label, b.label) for a, b in zip(first, second, strict=True))
    load_preprocessed(DataConfig(root=str(tiny_phantom), cache_dir=str(tmp_path), target_spacing_mm=1.5), 32)
    assert len(list(tmp_path.glob("phantom-*.npz"))) == 2


def test_ssl4mis_fixed_split_never_leaks():
    from sdnet.data.splits import fixed_split

    train = [f"p{i:03d}" for i in range(70)]
    s = fixed_split(train, ["v1", "v2"], ["t1"], labelled_subjects=3, seed=2)
    assert len(s.labelled) == 3 and set(s.labelled) <= set(train)
    assert s == fixed_split(train, ["v1", "v2"], ["t1"], labelled_subjects=3, seed=2)


def test_unlabelled_cap_is_exact_and_spread_over_volumes():
    from sdnet.data.pipeline import _cap_evenly

    items = [(np.arange(n, dtype=np.float32)[:, None, None], None, f"s{n}") for n in (7, 9, 10, 3)]
    capped = _cap_evenly(items, 12)
    assert sum(i.shape[0] for i, _, _ in capped) == 12
    assert {sid for _, _, sid in capped} == {"s7", "s9", "s10", "s3"}
    assert _cap_evenly(items, 100) == items
