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
    cfg = DataConfig(root=str(tiny_phantom), labelled_subjects=2, val_fraction=0.25, test_fraction=0.25)
    d = prepare_data(cfg, image_size=32, n_classes=4)
    s = d.split
    assert set(d.labelled.subject_ids) == set(s.labelled)
    assert d.unlabelled is not None and set(d.unlabelled.subject_ids) <= set(s.train)
    held_out = set(s.val) | set(s.test)
    assert not held_out & (set(d.labelled.subject_ids) | set(d.unlabelled.subject_ids) | set(d.real_masks.subject_ids))
    assert {v.subject_id for v in d.test} == set(s.test) and {v.subject_id for v in d.val} == set(s.val)
    # strict default: D's real masks come from labelled subjects only
    assert set(d.real_masks.subject_ids) == set(s.labelled)
    assert d.labelled.images.min() >= -1 and d.labelled.images.max() <= 1
    assert d.labelled.masks is not None and set(np.unique(d.labelled.masks.numpy())) <= {0, 1, 2, 3}


def test_fully_supervised_and_unpaired_masks(tiny_phantom: Path):
    cfg = DataConfig(root=str(tiny_phantom), labelled_subjects=1, use_unlabelled=False,
                     discriminator_masks="training", val_fraction=0.25, test_fraction=0.25)
    d = prepare_data(cfg, image_size=32, n_classes=4)
    assert d.unlabelled is None
    assert set(d.real_masks.subject_ids) == set(d.split.train)
