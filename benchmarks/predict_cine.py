"""``python -m benchmarks.predict_cine``: throughput of ``sdnet predict`` on a cine at the CPU configuration.

A synthetic 10-slice × 25-phase cine NIfTI (256 × 216 px, 1.4 × 1.4 × 8 mm — ACDC-like; the content does not
change the cost) is segmented end to end by :func:`sdnet.inference.predict_scan` — read one frame at a time,
orientation, resampling to 1.37 mm, intensity scaling, crop, the network, mapping back, writing the 4D mask —
with the model of ``configs/acdc_cpu.yaml`` (random weights: the cost does not depend on them). Reported: slices
per second end to end and for the network alone on the same slices, the fraction of the time spent outside the
network, and the peak resident memory against the size of the cine as float32 (frames are streamed, so the
peak should stay well below holding the whole cine as float data several times over).

    python -m benchmarks.predict_cine [--threads 2] [--repeats 2] [--out docs/performance-predict.md]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from sdnet.config import load_config
from sdnet.data.scans import read_nifti_scan
from sdnet.inference import predict_probabilities, predict_scan
from sdnet.models import build_segmenter, for_inference

ROOT = Path(__file__).resolve().parents[1]


def synthetic_cine(path: Path, *, shape: tuple[int, int, int, int] = (256, 216, 10, 25)) -> Path:
    rng = np.random.default_rng(0)
    x, y = np.mgrid[: shape[0], : shape[1]]
    frames = []
    for t in range(shape[3]):
        radius = 22 + 6 * np.cos(2 * np.pi * t / shape[3])
        r = np.hypot(x - 120.0, y - 100.0)
        frame = np.where(r < radius, 900.0, 250.0)[..., None] + rng.normal(0, 30, shape[:3])
        frames.append(frame.astype(np.float32))
    image = nib.Nifti1Image(np.stack(frames, axis=-1), np.diag([1.4, 1.4, 8.0, 1.0]))
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(ROOT / "configs" / "acdc_cpu.yaml")
    torch.manual_seed(0)
    model = for_inference(build_segmenter(config.model, "sdnet"))
    labels = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
    with tempfile.TemporaryDirectory() as tmp:
        cine = synthetic_cine(Path(tmp) / "cine_0000.nii.gz")
        scan = read_nifti_scan(cine)
        n_slices = scan.file_shape[2] * scan.n_frames
        predict_scan(model, scan, Path(tmp) / "warm.nii.gz", data_config=config.data,
                     image_size=config.model.image_size, labels=labels)  # warm-up
        end_to_end = []
        for k in range(args.repeats):
            t0 = time.perf_counter()
            predict_scan(model, read_nifti_scan(cine), Path(tmp) / f"out{k}.nii.gz", data_config=config.data,
                         image_size=config.model.image_size, labels=labels)
            end_to_end.append(time.perf_counter() - t0)
        size = config.model.image_size
        batch = torch.rand(scan.file_shape[2], 1, size, size) * 2 - 1
        network = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _t in range(scan.n_frames):
                predict_probabilities(model, batch)
            network.append(time.perf_counter() - t0)
    e2e, net = min(end_to_end), min(network)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cine_mb = np.prod(scan.file_shape) * 4 / 2**20
    rows = [
        ("cine", f"{scan.file_shape[0]}×{scan.file_shape[1]} px, {scan.file_shape[2]} slices × {scan.n_frames} "
                 f"phases = {n_slices} slices"),
        ("model", f"configs/acdc_cpu.yaml ({size} px, U-Net base {config.model.unet_filters}), {args.threads} "
                  f"threads, torch {torch.__version__}"),
        ("end to end (read, preprocess, network, map back, write)", f"{e2e:.2f} s = **{n_slices / e2e:.1f} slices/s**"),
        ("network alone (same slices, batch = one frame)", f"{net:.2f} s = {n_slices / net:.1f} slices/s"),
        ("share of the time outside the network", f"{100 * (1 - net / e2e):.0f} %"),
        ("peak resident memory of the process", f"{peak_mb:.0f} MB (the cine as float32: {cine_mb:.0f} MB)"),
    ]
    text = "\n".join([
        "# `sdnet predict` on a cine (python -m benchmarks.predict_cine)", "",
        f"Best of {args.repeats} runs after a warm-up; a synthetic ACDC-like cine (see the module docstring).", "",
        "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""])
    print(text)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
