"""Masks written back to the input grid overlay the original image."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from sdnet.config import DataConfig
from sdnet.data.pipeline import preprocess_volume
from sdnet.data.volumes import DatasetInfo, Volume
from sdnet.inference import grid_steps, to_input_grid
from sdnet.metrics import dice_per_class

INFO = DatasetInfo(name="t", labels={0: "background", 1: "RV", 2: "MYO", 3: "LV"}, modalities=("MR",))


def _disc_volume(shape=(3, 90, 70), spacing=(1.1, 1.6, 8.0)) -> Volume:
    _, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    label = np.zeros(shape, dtype=np.int64)
    r = np.hypot((yy - 40) * spacing[0], (xx - 38) * spacing[1])  # a disc of 18 mm radius, in mm
    label[:, (r < 18)] = 2
    label[:, (r < 11)] = 3
    image = (label * 50.0 + 10).astype(np.float32)
    return Volume(subject_id="s", phase=0, image=image, label=label, spacing=spacing, affine=np.diag([*spacing, 1.0]),
                  modality="MR", source="mem")


def test_round_trip_to_input_grid_overlays_the_original():
    volume = _disc_volume()
    for cfg in (DataConfig(target_spacing_mm=1.37), DataConfig(target_spacing_mm=0, resize=48),
                DataConfig(target_spacing_mm=2.0)):
        _, label = preprocess_volume(volume, INFO, 64, cfg)
        assert label is not None
        probabilities = F.one_hot(torch.from_numpy(label), 4).permute(0, 3, 1, 2).float()  # a "perfect" model
        back = to_input_grid(probabilities, grid_steps(volume, cfg, 64))
        assert back.shape == volume.image.shape
        dice = dice_per_class(back, volume.label, 4)
        assert dice[1] > 0.9 and dice[2] > 0.95, (cfg, dice)  # MYO ring, LV disc


def test_cli_predict_writes_mask_with_input_affine(tmp_path: Path, tiny_phantom: Path, capsys):
    import yaml

    from sdnet.cli import main
    from sdnet.config import to_dict

    from .helpers import tiny_config

    cfg = to_dict(tiny_config("", epochs=1, steps_per_epoch=2))
    del cfg["data"]["root"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(tiny_phantom), "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    image = sorted(tiny_phantom.glob("phantom_000/phantom_000_MR_phase00.nii.gz"))[0]
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), "--input", str(image), "--out",
                 str(tmp_path / "pred")]) == 0
    out = tmp_path / "pred" / "phantom_000_MR_phase00_seg.nii.gz"
    src, seg = nib.load(str(image)), nib.load(str(out))
    assert seg.shape == src.shape and np.allclose(seg.affine, src.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
    capsys.readouterr()
