"""``sdnet predict`` on one SSL4MIS test volume written as NIfTI in three voxel layouts (docs/orientation.md).

    python experiments/predict_layouts.py RUN --data ../shared/data/acdc_ssl4mis --out /tmp/layouts \
        [--patient patient001] [--frame 1]

The volume is written as its ACDC file stores it (voxel axes towards L, P, S with ACDC's axis-aligned header, the
geometry the anatomical check implies), and as RAS and PIR copies with the affines that keep every voxel's world
position; the label the same way, as the reference. Prints, per layout, whether the written mask equals the LPS
one in world space, its test Dice against the reference, and the predict-time anatomical check of
``predictions.csv``; exits 1 when the masks differ or a check fails.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from sdnet.data.orientation import InPlaneMap
from sdnet.data.readers import read_ssl4mis
from sdnet.data.scans import read_nifti_scan
from sdnet.metrics import dice_per_class
from sdnet.predict import predict_inputs


def layouts(data: np.ndarray, affine: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(X, Y, Z) data stored towards L, P, S -> {"LPS", "RAS", "PIR"}: (data, affine) of the same world volume."""
    out = {"LPS": (data, affine)}
    ras = InPlaneMap(flip_rows=True, flip_cols=True)
    out["RAS"] = (ras.apply(data, axes=(0, 1)), ras.affine(affine, (data.shape[0], data.shape[1])))
    pir = np.ascontiguousarray(np.transpose(data, (1, 2, 0))[:, ::-1, ::-1])  # (P, I, R) = (j, -k, -i)
    m = np.zeros((4, 4))
    m[1, 0] = 1.0
    m[2, 1], m[2, 3] = -1.0, data.shape[2] - 1
    m[0, 2], m[0, 3] = -1.0, data.shape[0] - 1
    m[3, 3] = 1.0
    out["PIR"] = (pir, affine @ m)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="the SSL4MIS release folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--patient", default="patient001")
    parser.add_argument("--frame", type=int, default=1, choices=(1, 2), help="1 = ED, 2 = ES")
    parser.add_argument("--spacing", type=float, default=1.5625, help="in-plane mm (the release keeps none)")
    args = parser.parse_args()
    volumes = read_ssl4mis(args.data, patients=[args.patient], orientation="legacy")[1]
    stored = next(v for v in volumes if v.phase == args.frame - 1)  # (Z, j, i) as SimpleITK wrote it
    assert stored.label is not None
    affine = np.diag([-args.spacing, -args.spacing, 10.0, 1.0])  # ACDC's header: voxel axes towards L, P, S
    image = np.ascontiguousarray(np.transpose(stored.image, (2, 1, 0)))  # the ACDC file's (i, j, z)
    label = np.ascontiguousarray(np.transpose(stored.label, (2, 1, 0))).astype(np.uint8)
    scans, refs = args.out / "scans", args.out / "reference"
    scans.mkdir(parents=True, exist_ok=True)
    refs.mkdir(parents=True, exist_ok=True)
    label_layouts = layouts(label, affine)
    for name, (data, a) in layouts(image, affine).items():
        nib.save(nib.Nifti1Image(data, a), str(scans / f"{args.patient}_{name}.nii.gz"))
        nib.save(nib.Nifti1Image(label_layouts[name][0], a), str(refs / f"{args.patient}_{name}.nii.gz"))
    result = predict_inputs(args.checkpoint, [scans], args.out / "masks", on_line=print)
    truth = np.moveaxis(read_nifti_scan(refs / f"{args.patient}_LPS.nii.gz").frame(0), 2, 0).astype(np.int64)
    world: dict[str, np.ndarray] = {}
    for name in ("LPS", "RAS", "PIR"):
        mask = read_nifti_scan(args.out / "masks" / f"{args.patient}_{name}_seg.nii.gz").frame(0)
        world[name] = np.moveaxis(mask, 2, 0).astype(np.int64)  # the convention: comparable voxel for voxel
    assert result.summary_csv is not None
    rows = {r["name"]: r for r in csv.DictReader(result.summary_csv.open())}
    failures = 0
    print(f"{'layout':6s} {'same as LPS':12s} {'Dice RV/MYO/LV':22s} anatomy  RV-LV dR/dA mm  direction")
    for name, mask in world.items():
        same = bool(np.array_equal(mask, world["LPS"]))
        dice = dice_per_class(mask, truth, 4)
        row = rows[f"{args.patient}_{name}"]
        failures += (not same) + (row["anatomy_check"] != "ok")
        print(f"{name:6s} {same!s:12s} {' / '.join(f'{d:.3f}' for d in dice):22s} {row['anatomy_check']:8s} "
              f"{row['rv_lv_dR_mm']:>6s} / {row['rv_lv_dA_mm']:<6s}  {row['rv_lv_angle_deg']}°")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
