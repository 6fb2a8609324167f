"""`sdnet export`: safetensors + config + model card, ONNX; exports load like checkpoints, without pickles."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sdnet.checkpoint import load_model
from sdnet.cli import main
from sdnet.config import apply_overrides
from sdnet.errors import CheckpointError
from sdnet.export import export_model, onnx_max_difference
from sdnet.training import Trainer

from .helpers import tiny_config


@pytest.fixture(scope="module", params=["sdnet", "unet"])
def run(request: pytest.FixtureRequest, tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = apply_overrides(tiny_config(tiny_phantom), ["train.epochs=1", "train.steps_per_epoch=3",
                                                     f"train.method={request.param}"])
    out = tmp_path_factory.mktemp("export") / request.param
    Trainer(cfg, out).fit()
    return out


def test_export_loads_and_predicts_like_the_checkpoint(run: Path, tmp_path: Path, tiny_phantom: Path):
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "model"), "--onnx"]) == 0
    folder = tmp_path / "model"
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "model.json", "MODEL_CARD.md", "model.onnx"}
    assert b"\x80" not in (folder / "model.safetensors").read_bytes()[:8]  # a safetensors header, not a pickle
    meta = json.loads((folder / "model.json").read_text())
    assert meta["config"]["data"]["orientation"] == "ras" and meta["provenance"]["test_subjects"]
    card = (folder / "MODEL_CARD.md").read_text()
    assert "orientation convention: `ras`" in card and "seed 0" in card
    # the exported weights are the checkpoint's
    a, _, _ = load_model(run)
    b, config, state = load_model(folder)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert state["labels"] and state["class_names"] == ["RV", "MYO", "LV"]
    # predict from both: the same masks
    image = sorted(tiny_phantom.glob("phantom_000/phantom_000_MR_phase00.nii.gz"))[0]
    for source, out in ((run, "from_ckpt"), (folder, "from_export")):
        assert main(["predict", "--checkpoint", str(source), "--input", str(image), "--out", str(tmp_path / out)]) == 0
    m1 = np.asarray(nib.load(str(tmp_path / "from_ckpt" / "phantom_000_MR_phase00_seg.nii.gz")).dataobj)
    m2 = np.asarray(nib.load(str(tmp_path / "from_export" / "phantom_000_MR_phase00_seg.nii.gz")).dataobj)
    np.testing.assert_array_equal(m1, m2)
    # ONNX: within 1e-4 of PyTorch on fresh inputs, any batch size
    size = config.model.image_size
    for batch in (1, 5):
        diff = onnx_max_difference(b, folder / "model.onnx", torch.rand(batch, 1, size, size) * 2 - 1)
        assert diff is not None and diff < 1e-4


def test_damaged_or_mismatched_exports_are_refused(run: Path, tmp_path: Path):
    folder = tmp_path / "model"
    export_model(run, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["config"]["model"]["unet_filters"] *= 2  # a config the weights do not fit
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match the config"):
        load_model(folder)
    export_model(run, folder, overwrite=True)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not readable"):
        load_model(folder)


def test_checkpoint_from_another_config_is_a_clear_error(run: Path, tmp_path: Path, tiny_phantom: Path, capsys):
    from sdnet.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(run / "best.pt")
    state["config"]["model"]["unet_filters"] = 8  # weights trained with 4 base filters
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_model(tmp_path / "other.pt")
    image = sorted(tiny_phantom.glob("phantom_000/phantom_000_MR_phase00.nii.gz"))[0]
    assert main(["predict", "--checkpoint", str(tmp_path / "other.pt"), "--input", str(image),
                 "--out", str(tmp_path / "o")]) == 2
    assert "other.pt: checkpoint is incomplete or does not match its config" in capsys.readouterr().err
