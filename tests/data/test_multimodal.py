"""Multimodal data (paper §5.3): several renderings per subject, the per-modality mixture, per-modality scores."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sdnet.config import ConfigError, DataConfig
from sdnet.data.pipeline import prepare_data
from sdnet.data.splits import modality_blocks
from sdnet.data.volumes import read_phantom
from sdnet.errors import DataError
from sdnet.evaluation import EvaluationReport, VolumeScore


def test_modality_and_mix_are_parsed_and_validated():
    cfg = DataConfig(modality="MR+CT", modality_mix="MR:1, CT:0.125")
    assert cfg.modalities == ("MR", "CT") and cfg.mix() == {"MR": 1.0, "CT": 0.125}
    assert DataConfig().modalities == ("MR",) and DataConfig().mix() == {}
    bad = [dict(modality="MR+"), dict(modality="MR+MR"), dict(modality="MR+CT", modality_mix="MR:1"),
           dict(modality="MR", modality_mix="CT:1"), dict(modality="MR+CT", modality_mix="MR:1.5,CT:0"),
           dict(modality="MR+CT", modality_mix="MR:0,CT:0"), dict(modality="MR+CT", modality_mix="MR=1,CT=1")]
    for kwargs in bad:
        with pytest.raises(ConfigError, match=r"data\.modality"):
            DataConfig(**kwargs)  # type: ignore[arg-type]


def test_modality_blocks_are_disjoint_up_to_a_sum_of_one_and_overlap_beyond():
    train = [f"s{i}" for i in range(8)]
    blocks = modality_blocks(train, {"MR": 0.875, "CT": 0.125}, seed=3)
    assert len(blocks["MR"]) == 7 and len(blocks["CT"]) == 1 and not blocks["MR"] & blocks["CT"]
    assert blocks["MR"] | blocks["CT"] == set(train)
    full = modality_blocks(train, {"MR": 1.0, "CT": 0.125}, seed=3)
    assert full["MR"] == set(train) and len(full["CT"]) == 1
    assert modality_blocks(train, {"MR": 0.0, "CT": 0.01}, seed=3) == {"MR": frozenset(), "CT": full["CT"]}
    assert modality_blocks(train, {"MR": 0.5, "CT": 0.5}, seed=3) == modality_blocks(train, {"MR": 0.5, "CT": 0.5},
                                                                                       seed=3)


def test_read_phantom_in_two_modalities_shares_subject_ids(tiny_phantom: Path):
    info, volumes = read_phantom(tiny_phantom, modality=("MR", "CT"))
    assert info.modalities == ("MR", "CT") and len(volumes) == 2 * 8 * 3
    mr = {(v.subject_id, v.phase): v for v in volumes if v.modality == "MR"}
    ct = {(v.subject_id, v.phase): v for v in volumes if v.modality == "CT"}
    assert mr.keys() == ct.keys()
    key = next(k for k, v in mr.items() if v.label is not None)
    assert np.array_equal(mr[key].label, ct[key].label)  # same anatomy...
    assert not np.allclose(mr[key].image, ct[key].image)  # ...rendered differently
    with pytest.raises(DataError, match="BOLD"):
        read_phantom(tiny_phantom, modality=("MR", "BOLD"))


def test_prepare_data_mixture_keeps_subjects_whole_and_scores_every_modality(tiny_phantom: Path):
    cfg = DataConfig(root=str(tiny_phantom), modality="MR+CT", modality_mix="MR:0.75,CT:0.25", val_fraction=0.25,
                     test_fraction=0.25, use_unlabelled=False, cache_dir="none")
    d = prepare_data(cfg, image_size=32, n_classes=4)
    blocks = modality_blocks(d.split.train, cfg.mix(), seed=cfg.split_seed)
    assert len(blocks["MR"]) == 3 and len(blocks["CT"]) == 1  # 4 training subjects
    # 2 labelled phases x 3 slices per (subject, modality) in the mixture
    assert len(d.labelled) == 6 * (len(blocks["MR"]) + len(blocks["CT"]))
    assert set(d.labelled.subject_ids) == set(d.split.train)
    # held-out subjects are scored in both modalities, never seen in training
    assert sorted(v.modality for v in d.test) == ["CT"] * 4 + ["MR"] * 4
    assert not {v.subject_id for v in d.test} & set(d.labelled.subject_ids)
    val_modalities = sorted(v.modality for v in d.val)  # validated in both trained modalities
    assert set(val_modalities) == {"MR", "CT"} and val_modalities.count("MR") == val_modalities.count("CT")
    mr_only = prepare_data(dataclasses.replace(cfg, modality_mix="MR:1,CT:0"), image_size=32, n_classes=4)
    assert {v.modality for v in mr_only.val} == {"MR"}  # best.pt is never picked on a modality not trained on
    assert {v.modality for v in mr_only.test} == {"MR", "CT"}  # ...but the test still scores both
    single = prepare_data(DataConfig(root=str(tiny_phantom), modality="CT", val_fraction=0.25, test_fraction=0.25,
                                     use_unlabelled=False, cache_dir="none"), image_size=32, n_classes=4)
    assert {v.modality for v in single.test} == {"CT"}


def test_several_modalities_need_a_multimodality_format(tmp_path: Path):
    with pytest.raises(DataError, match="several modalities"):
        prepare_data(DataConfig(root=str(tmp_path), format="nnunet", modality="MR+CT"), image_size=32, n_classes=4)


def test_evaluation_report_is_split_by_modality(tmp_path: Path):
    def score(modality: str, value: float) -> VolumeScore:
        d = np.array([value, value])
        return VolumeScore(subject_id="s", phase=0, dice_3d=d, dice_slice=d, hd95=d, modality=modality)

    report = EvaluationReport(class_names=["A", "B"], volumes=[score("MR", 0.8), score("CT", 0.4), score("MR", 0.6)])
    assert report.modalities == ("MR", "CT")
    assert report.subset("MR").mean_dice() == pytest.approx(0.7) and report.subset("CT").mean_dice() == 0.4
    lines = report.summary_lines()
    assert any(line.startswith("[MR, 2 volumes] 3D Dice") for line in lines)
    csv_path, md_path = report.write(tmp_path)
    assert csv_path.read_text().splitlines()[0].endswith(",modality")
    assert "3D Dice, CT (1 volumes)" in md_path.read_text()
