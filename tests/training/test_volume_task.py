"""The LV-volume multi-task (paper §5.2): area regressor, volume labels in the split and data, training, fine-tuning."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdnet.config import ConfigError, apply_overrides
from sdnet.data.pipeline import prepare_data
from sdnet.data.splits import Split
from sdnet.errors import CheckpointError, DataError
from sdnet.losses import area_regression
from sdnet.metrics import area_percent
from sdnet.models import AreaRegressor, build_sdnet
from sdnet.training import Trainer

from ..helpers import tiny_config

VOLUME = ["model.area_regressor=true", "loss.vol=1", "data.volume_subjects=1"]


def test_area_percent_counts_the_class():
    masks = torch.zeros(2, 4, 5, dtype=torch.int64)
    masks[0, :2, :] = 3  # 10 of 20 pixels
    masks[1, 0, 0] = 3
    masks[1, 1, 1] = 2
    assert torch.allclose(area_percent(masks, 3), torch.tensor([50.0, 5.0]))


def test_area_regressor_shape_and_paper_layers():
    reg = AreaRegressor(anatomy_channels=8)
    s = torch.randint(0, 2, (3, 8, 24, 24)).float()
    out = reg(s)
    assert out.shape == (3,) and (out >= 0).all()
    convs = [m for m in reg.modules() if isinstance(m, torch.nn.Conv2d)]
    dense = [m for m in reg.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [16, 16] and all(c.kernel_size == (3, 3) for c in convs)
    assert [d.out_features for d in dense] == [16, 1]
    assert reg(torch.zeros(1, 8, 48, 48)).shape == (1,)  # any image size


def test_area_regressor_learns_the_area_of_an_anatomy_channel():
    """Fed one-hot maps whose channel 1 is a random disc, the regressor must learn the disc's area (a check that
    the pooled architecture can do the paper's task at all)."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = 3 + 9 * torch.rand(n, generator=gen)
        cy, cx = 12 + 8 * torch.rand(n, generator=gen), 12 + 8 * torch.rand(n, generator=gen)
        disc = ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2 <= r[:, None, None] ** 2).long()
        masks = disc * 3
        s = torch.stack([1 - disc, disc], dim=1).float()
        return s, area_percent(masks, 3)

    torch.manual_seed(0)
    reg = AreaRegressor(anatomy_channels=2)
    opt = torch.optim.Adam(reg.parameters(), lr=3e-3)
    test_s, test_area = batch(64)
    before = float(area_regression(reg(test_s), test_area).detach())
    for _ in range(300):
        s, area = batch(16)
        loss = area_regression(reg(s), area)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(area_regression(reg(test_s), test_area).detach())
    assert after < 0.15 * before, (before, after)
    assert after < 1.0  # percentage points of the image


def test_config_requires_the_regressor_for_the_volume_loss():
    with pytest.raises(ConfigError, match="area_regressor"):
        apply_overrides(tiny_config(), ["loss.vol=1"])
    with pytest.raises(ConfigError, match="sdnet"):
        apply_overrides(tiny_config(), ["model.area_regressor=true", "loss.vol=1", "train.method=unet"])
    with pytest.raises(ConfigError, match="volume_subjects"):
        apply_overrides(tiny_config(), ["data.volume_subjects=-1"])
    assert build_sdnet(apply_overrides(tiny_config(), VOLUME).model).area_regressor is not None
    assert build_sdnet(tiny_config().model).area_regressor is None


def test_volume_subjects_come_from_the_unlabelled_pool():
    split = Split(train=("a", "b", "c", "d", "e"), val=("v",), test=("t",), labelled=("a",))
    chosen = split.with_volume_subjects(2, seed=3)
    assert len(chosen.volume) == 2 and not set(chosen.volume) & {"a", "v", "t"}
    assert chosen == split.with_volume_subjects(2, seed=3)  # seeded
    assert chosen.with_volume_subjects(3, seed=9) == chosen  # an existing choice is kept (resume, fine-tuning)
    assert Split.from_dict(json.loads(json.dumps(chosen.to_dict()))) == chosen
    assert "volume" not in split.to_dict()  # splits without volume labels keep their old file format
    with pytest.raises(DataError, match="only 4 unlabelled"):
        split.with_volume_subjects(5, seed=0)
    with pytest.raises(DataError, match="volume-labelled"):
        Split(train=("a", "b"), val=(), test=(), labelled=("a",), volume=("a",))


def test_prepare_data_gives_areas_without_masks(tiny_phantom: Path):
    cfg = apply_overrides(tiny_config(tiny_phantom), VOLUME)
    data = prepare_data(cfg.data, image_size=32, n_classes=4)
    assert data.volume is not None and data.volume.masks is None and data.volume.areas is not None
    (subject,) = data.split.volume
    assert subject in data.split.train and subject not in data.split.labelled
    assert set(data.volume.subject_ids) == {subject}
    assert data.volume_class == 3  # LV of the phantom's labels
    assert data.unlabelled is not None and subject in data.unlabelled.subject_ids  # images stay in the pool
    # areas equal the masks' LV fraction, read independently of the pipeline
    full = prepare_data(apply_overrides(cfg, [f"data.labelled_subjects={len(data.split.train)}",
                                                 "data.volume_subjects=0"]).data,
                        image_size=32, n_classes=4)
    assert full.labelled.masks is not None
    rows = [i for i, s in enumerate(full.labelled.subject_ids) if s == subject]
    expected = (full.labelled.masks[rows] == 3).float().mean(dim=(1, 2)) * 100
    assert torch.allclose(data.volume.areas, expected)


def test_training_with_volume_labels_updates_the_regressor_and_resumes(tiny_phantom: Path, tmp_path: Path):
    cfg = apply_overrides(tiny_config(tiny_phantom, max_steps=6, log_every=1), VOLUME)
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.volume_stream is not None and "volume" in trainer.optimisers
    assert trainer.model.area_regressor is not None
    before = [p.detach().clone() for p in trainer.model.area_regressor.parameters()]
    trainer.fit()
    after = list(trainer.model.area_regressor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
             if '"step"' in line and '"event": "step"' in line]
    assert all(np.isfinite(r["volume_vol"]) and np.isfinite(r["sup_vol"]) for r in steps)
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    assert saved["volume"] == list(trainer.data.split.volume)
    resumed = Trainer.resume(tmp_path / "run", overrides=["train.max_steps=8"])
    assert resumed.data.split.volume == trainer.data.split.volume
    resumed.fit()
    assert resumed.step == 8


def test_fine_tuning_starts_from_the_checkpoint_weights(tiny_phantom: Path, tmp_path: Path):
    base = Trainer(tiny_config(tiny_phantom, max_steps=3), tmp_path / "base")
    base.fit()
    cfg = apply_overrides(tiny_config(tiny_phantom, max_steps=2), VOLUME)
    tuned = Trainer(cfg, tmp_path / "tuned", split=base.data.split, init_from=tmp_path / "base" / "last.pt")
    for key, value in base.model.state_dict().items():
        assert torch.equal(tuned.model.state_dict()[key], value), key
    assert tuned.data.split.labelled == base.data.split.labelled and tuned.step == 0
    tuned.fit()
    wider = apply_overrides(tiny_config(tiny_phantom), ["model.anatomy_channels=6"])
    with pytest.raises(CheckpointError, match="does not match"):
        Trainer(wider, tmp_path / "wider", init_from=tmp_path / "base")
