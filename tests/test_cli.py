"""The `sdnet` command line: a smoke test end to end, and one clean error per kind of bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from sdnet.cli import main
from sdnet.config import to_dict

from .helpers import tiny_config


def _write_config(path: Path, **train: object) -> Path:
    cfg = to_dict(tiny_config("", **train))
    del cfg["data"]["root"]
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_smoke_phantom_train_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = tmp_path / "phantom"
    rc, out, _ = _run(["phantom", "--out", str(data), "--subjects", "8", "--size", "32", "--slices", "3",
                       "--phases", "3"], capsys)
    assert rc == 0 and (data / "phantom.json").exists()
    config = _write_config(tmp_path / "tiny.yaml", epochs=2, steps_per_epoch=3)
    run = tmp_path / "run"
    rc, out, err = _run(["train", "--config", str(config), "--data", str(data), "--out", str(run), "--no-progress",
                         "--set", "optim.lr=1e-3"], capsys)
    assert rc == 0, err
    assert "best validation 3D Dice" in out
    for name in ("config.yaml", "split.json", "log.jsonl", "best.pt", "last.pt", "result.json"):
        assert (run / name).exists(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 1e-3
    rc, out, err = _run(["evaluate", "--checkpoint", str(run), "--figures", "2"], capsys)
    assert rc == 0, err
    assert "held-out test 3D Dice per class: RV=" in out
    for name in ("per_volume.csv", "summary.md", "decomposition.png", "training_curves.png"):
        assert (run / "eval_test" / name).exists(), name
    rows = (run / "eval_test" / "per_volume.csv").read_text().splitlines()
    assert rows[0].startswith("subject,phase,dice3d_RV") and len(rows) == 1 + 2 * 2  # 2 test subjects x ED/ES
    # a second train into the same folder is refused; --resume continues it
    rc, _, err = _run(["train", "--config", str(config), "--data", str(data), "--out", str(run)], capsys)
    assert rc == 2 and "--resume" in err
    rc, out, err = _run(["train", "--resume", str(run), "--no-progress", "--set", "train.epochs=3"], capsys)
    assert rc == 0 and "resuming" in out and "after 3 epochs" in out, err


def test_console_script_help():
    exe = Path(sys.executable).parent / "sdnet"
    for args in ([], ["train"], ["evaluate"], ["phantom"]):
        res = subprocess.run([str(exe), *args, "--help"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and "usage: sdnet" in res.stdout


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.fixture
def phantom_copy(tiny_phantom: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(tiny_phantom, dst)
    return dst


def _first(data: Path, kind: str) -> Path:
    return sorted(data.glob(f"phantom_000/phantom_000_{kind}_phase00.nii.gz"))[0]


def _assert_clean_error(rc: int, err: str, needle: str) -> None:
    assert rc == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("sdnet: error:") and needle in lines[0], err
    assert "Traceback" not in err


def _train(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    config = _write_config(tmp_path / "tiny.yaml", epochs=1, steps_per_epoch=1)
    rc, _, err = _run(["train", "--config", str(config), "--data", str(data), "--out", str(tmp_path / "run"),
                       "--no-progress", *extra], capsys)
    return rc, err


def test_missing_path(tmp_path, capsys):
    rc, err = _train(tmp_path / "nope", tmp_path, capsys)
    _assert_clean_error(rc, err, "nope")


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = _train(tmp_path / "empty", tmp_path, capsys)
    _assert_clean_error(rc, err, "empty")


def test_corrupt_nifti(phantom_copy, tmp_path, capsys):
    bad = _first(phantom_copy, "MR")
    bad.write_bytes(b"\x1f\x8b garbage that is not a NIfTI")
    rc, err = _train(phantom_copy, tmp_path, capsys)
    _assert_clean_error(rc, err, bad.name)


def test_4d_nifti(phantom_copy, tmp_path, capsys):
    bad = _first(phantom_copy, "MR")
    img = nib.load(str(bad))
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), img.affine), str(bad))
    rc, err = _train(phantom_copy, tmp_path, capsys)
    _assert_clean_error(rc, err, bad.name)


def test_nan_image(phantom_copy, tmp_path, capsys):
    bad = _first(phantom_copy, "MR")
    img = nib.load(str(bad))
    data = np.asarray(img.dataobj).astype(np.float32)
    data[3, 3, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(bad))
    rc, err = _train(phantom_copy, tmp_path, capsys)
    _assert_clean_error(rc, err, bad.name)


def test_constant_image(phantom_copy, tmp_path, capsys):
    bad = _first(phantom_copy, "MR")
    img = nib.load(str(bad))
    nib.save(nib.Nifti1Image(np.full(img.shape, 5.0, np.float32), img.affine), str(bad))
    rc, err = _train(phantom_copy, tmp_path, capsys)
    _assert_clean_error(rc, err, "constant")


def test_label_out_of_range(phantom_copy, tmp_path, capsys):
    bad = _first(phantom_copy, "label")
    img = nib.load(str(bad))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, img.affine), str(bad))
    rc, err = _train(phantom_copy, tmp_path, capsys)
    _assert_clean_error(rc, err, bad.name)
    assert "[7]" in err


def test_image_mask_shape_mismatch(phantom_copy, tmp_path, capsys):
    bad = _first(phantom_copy, "label")
    img = nib.load(str(bad))
    data = np.asarray(img.dataobj)[:-2]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), img.affine), str(bad))
    rc, err = _train(phantom_copy, tmp_path, capsys)
    _assert_clean_error(rc, err, bad.name)


def test_bad_config_key(tiny_phantom, tmp_path, capsys):
    rc, err = _train(tiny_phantom, tmp_path, capsys, "--set", "train.learning_rate=1")
    _assert_clean_error(rc, err, "train.learning_rate")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  unet_filterz: 8\n")
    rc, _, err = _run(["train", "--config", str(bad), "--data", str(tiny_phantom)], capsys)
    _assert_clean_error(rc, err, "model.unet_filterz")


def test_evaluate_bad_checkpoint(tmp_path, capsys):
    rc, _, err = _run(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")], capsys)
    _assert_clean_error(rc, err, "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    rc, _, err = _run(["evaluate", "--checkpoint", str(junk)], capsys)
    _assert_clean_error(rc, err, "junk.pt")


def test_evaluate_on_broken_data(phantom_copy, tmp_path, capsys):
    config = _write_config(tmp_path / "tiny.yaml", epochs=1, steps_per_epoch=1)
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data", str(phantom_copy), "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    rc, _, err = _run(["evaluate", "--checkpoint", str(run), "--data", str(tmp_path / "gone")], capsys)
    _assert_clean_error(rc, err, "gone")


def test_newcomer_friction(tmp_path: Path, tiny_phantom: Path, capsys: pytest.CaptureFixture[str]):
    """Issue 15, item 5: no silent paper-size CPU training, one-line device errors, fast --help, --version, the
    resolved config on request."""
    rc, _, err = _run(["train", "--data", str(tiny_phantom), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "needs --config" in err and "configs/phantom_demo.yaml" in err
    config = _write_config(tmp_path / "c.yaml")
    rc, out, _ = _run(["train", "--config", str(config), "--set", "train.seed=7", "--print-config"], capsys)
    assert rc == 0 and yaml.safe_load(out)["train"]["seed"] == 7 and not (tmp_path / "r").exists()
    import torch

    if not torch.cuda.is_available():
        rc, _, err = _run(["train", "--config", str(config), "--data", str(tiny_phantom), "--out",
                           str(tmp_path / "gpu"), "--set", "train.device=cuda:0"], capsys)
        assert rc == 2 and err.count("\n") == 1 and "cuda:0" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("sdnet ")
    # `sdnet --help` must not import torch (it takes seconds)
    probe = subprocess.run([sys.executable, "-c", "import sys, sdnet.cli; sdnet.cli.build_parser(); "
                            "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False"
