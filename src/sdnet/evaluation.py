"""Segmentation evaluation of a trained model on whole volumes: Dice per class per volume, CSV and Markdown.

Predictions are made slice by slice under ``torch.inference_mode`` with the model in eval mode (BatchNorm running
statistics, z not sampled), re-assembled into volumes, and scored with :mod:`sdnet.metrics` on hard labels.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from sdnet.checkpoint import load_run
from sdnet.config import RunConfig
from sdnet.data.nifti import save_nifti
from sdnet.data.pipeline import PreparedVolume, prepare_data
from sdnet.data.splits import Split
from sdnet.errors import DataError
from sdnet.inference import predict_volume
from sdnet.metrics import dice_per_class, hd95_per_class, slice_averaged_dice
from sdnet.models import Segmenter, for_inference
from sdnet.outputs import atomic_output, write_text


@dataclass
class VolumeScore:
    """Scores of one volume per class: 3D Dice, the authors' per-slice average Dice, and HD95 (mm, or pixels
    when the spacing is unknown; NaN when the structure is missing from prediction or truth)."""

    subject_id: str
    phase: int
    dice_3d: np.ndarray
    dice_slice: np.ndarray
    hd95: np.ndarray
    modality: str = ""


@dataclass
class EvaluationReport:
    """Per-volume scores and their summary over volumes."""

    class_names: list[str]
    volumes: list[VolumeScore] = field(default_factory=list)
    hd95_unit: str = "mm"

    def _matrix(self, attr: str) -> np.ndarray:
        return np.stack([getattr(v, attr) for v in self.volumes]) if self.volumes else np.zeros((0, 0))

    def mean_std(self, kind: str = "3d") -> tuple[np.ndarray, np.ndarray]:
        """Per-class mean and std over volumes (NaN-aware; a class with no finite value, e.g. HD95 of a structure
        never predicted, is NaN without a warning)."""
        m = self._matrix({"3d": "dice_3d", "slice": "dice_slice", "hd95": "hd95"}[kind])
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(m, axis=0), np.nanstd(m, axis=0)

    def mean_dice(self, kind: str = "3d") -> float:
        """Average over classes of the per-class mean over volumes."""
        means, _ = self.mean_std(kind)
        return float(np.nanmean(means)) if means.size else float("nan")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities of the scored volumes, in first-seen order (``("",)`` when none was recorded)."""
        return tuple(dict.fromkeys(v.modality for v in self.volumes))

    def subset(self, modality: str) -> EvaluationReport:
        """The report restricted to the volumes of one modality (multimodal models are scored per modality)."""
        return EvaluationReport(class_names=self.class_names, hd95_unit=self.hd95_unit,
                                volumes=[v for v in self.volumes if v.modality == modality])

    def summary_lines(self) -> list[str]:
        lines = self._summary_lines()
        if len(self.modalities) > 1:
            for modality in self.modalities:
                sub = self.subset(modality)
                lines += [f"[{modality}, {len(sub.volumes)} volumes] {line}" for line in sub._summary_lines()[:1]]
        return lines

    def _summary_lines(self) -> list[str]:
        lines = []
        for kind, title in (("3d", "3D Dice"), ("slice", "per-slice Dice (authors' average)")):
            means, stds = self.mean_std(kind)
            parts = [f"{n} {m:.3f} ± {s:.3f}" for n, m, s in zip(self.class_names, means, stds, strict=True)]
            lines.append(f"{title}: " + ", ".join(parts) + f" | mean {self.mean_dice(kind):.3f}")
        means, stds = self.mean_std("hd95")
        parts = [f"{n} {m:.2f} ± {s:.2f}" for n, m, s in zip(self.class_names, means, stds, strict=True)]
        lines.append(f"HD95 ({self.hd95_unit}): " + ", ".join(parts) + f"{self._missing_note()}")
        return lines

    def _missing_note(self) -> str:
        missing = int(np.isnan(self._matrix("hd95")).sum()) if self.volumes else 0
        return f" ({missing} volume-class pairs undefined: structure missing)" if missing else ""

    def write(self, out_dir: str | Path, *, title: str = "Evaluation") -> tuple[Path, Path]:
        """Write ``per_volume.csv`` and ``summary.md`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        csv_path = out / "per_volume.csv"
        with atomic_output(csv_path) as tmp_path, tmp_path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["subject", "phase"] + [f"dice3d_{n}" for n in self.class_names]
                + [f"dice_slice_{n}" for n in self.class_names]
                + [f"hd95_{self.hd95_unit}_{n}" for n in self.class_names] + ["modality"]
            )
            for v in self.volumes:
                writer.writerow(
                    [v.subject_id, v.phase] + [_fmt(x) for x in v.dice_3d] + [_fmt(x) for x in v.dice_slice]
                    + [_fmt(x) for x in v.hd95] + [v.modality]
                )
        md_path = out / "summary.md"
        lines = [f"# {title}", "", f"{len(self.volumes)} volumes; mean ± std over volumes.", ""]
        header = "| metric | " + " | ".join(self.class_names) + " | mean |"
        lines += [header, "|" + "---|" * (len(self.class_names) + 2)]
        for kind, name in (("3d", "3D Dice"), ("slice", "per-slice Dice")):
            means, stds = self.mean_std(kind)
            cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(means, stds, strict=True)]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {self.mean_dice(kind):.3f} |")
        means, stds = self.mean_std("hd95")
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in zip(means, stds, strict=True)]
        lines.append(f"| HD95 ({self.hd95_unit}) | " + " | ".join(cells) + f" | {float(np.nanmean(means)):.2f} |")
        if len(self.modalities) > 1:
            for modality in self.modalities:
                sub = self.subset(modality)
                means, stds = sub.mean_std("3d")
                cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(means, stds, strict=True)]
                lines.append(f"| 3D Dice, {modality} ({len(sub.volumes)} volumes) | " + " | ".join(cells)
                             + f" | {sub.mean_dice('3d'):.3f} |")
        if self._missing_note():
            lines += ["", f"HD95:{self._missing_note()}."]
        write_text(md_path, "\n".join(lines) + "\n")
        return csv_path, md_path


def _fmt(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def evaluate_volumes(
    model: Segmenter,
    volumes: Sequence[PreparedVolume],
    *,
    class_names: Sequence[str],
    batch_size: int = 16,
    with_hd95: bool = True,
) -> EvaluationReport:
    """Score ``model`` on labelled volumes.

    Args:
        model: a trained SDNet or baseline U-Net (anything with ``segment``).
        volumes: preprocessed volumes with labels.
        class_names: names of the foreground classes 1..L.
        batch_size: slices per forward pass.
        with_hd95: also compute HD95 (skipped for the per-epoch validation, which needs Dice only).
    """
    n_classes = len(class_names) + 1
    unit = "mm" if volumes and all(v.spacing is not None for v in volumes) else "px"
    report = EvaluationReport(class_names=list(class_names), hd95_unit=unit)
    fast = for_inference(model) if volumes else model  # BatchNorm folded, channels-last: same outputs, faster
    for vol in volumes:
        pred = predict_volume(fast, vol.image, batch_size=batch_size).numpy()
        target = vol.label.numpy()
        report.volumes.append(
            VolumeScore(
                subject_id=vol.subject_id,
                phase=vol.phase,
                dice_3d=dice_per_class(pred, target, n_classes),
                dice_slice=slice_averaged_dice(pred, target, n_classes),
                hd95=hd95_per_class(pred, target, n_classes, vol.spacing if unit == "mm" else None)
                if with_hd95 else np.full(n_classes - 1, np.nan),
                modality=vol.modality,
            )
        )
    return report


def write_volume_masks(model: Segmenter, volumes: Sequence[PreparedVolume], out_dir: str | Path, *,
                       batch_size: int = 16) -> tuple[Path, Path]:
    """Write every volume's predicted and true class maps as NIfTI (on the model's preprocessed grid, (H, W, S)
    uint8 class indices 0..L) to ``out_dir/pred`` and ``out_dir/truth``, named ``<subject>_frameNN.nii.gz``
    (NN = phase + 1, ACDC's frame numbering), so that ``sdnet indices`` pairs them. The voxel size is written when
    known; otherwise the header says "unknown unit" and indices report ratios (EF) only.

    Returns:
        (the prediction folder, the truth folder).
    """

    pred_dir, truth_dir = Path(out_dir) / "pred", Path(out_dir) / "truth"
    for v in volumes:
        pred = predict_volume(model, v.image, batch_size=batch_size).numpy().astype(np.uint8)
        affine = np.diag([*(v.spacing or (1.0, 1.0, 1.0)), 1.0])
        name = f"{v.subject_id}_frame{v.phase + 1:02d}" + (f"_{v.modality}" if v.modality else "") + ".nii.gz"
        for folder, data in ((pred_dir, pred), (truth_dir, v.label.numpy().astype(np.uint8))):
            save_nifti(folder / name, np.moveaxis(data, 0, 2), affine, dtype=np.uint8,
                       unit="mm" if v.spacing is not None else "unknown")
    return pred_dir, truth_dir


@dataclass(frozen=True)
class CheckpointEvaluation:
    """The scores of a checkpoint on one part of its saved split, with the config and split it was trained with."""

    report: EvaluationReport
    config: RunConfig
    split: Split
    volumes: tuple[PreparedVolume, ...]
    model: Segmenter
    class_names: tuple[str, ...]
    history: tuple[dict[str, Any], ...]  # the training history saved in the checkpoint (per-epoch records)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    part: Literal["test", "val"] = "test",
    volumes: Sequence[PreparedVolume] | None = None,
    data_root: str | Path | None = None,
    device: str = "cpu",
    with_hd95: bool = True,
) -> CheckpointEvaluation:
    """Score a checkpoint (a ``.pt`` file or a run folder, where ``best.pt`` is used) on its own test subjects.

    The model, config, class names and subject split come from the checkpoint, as in ``sdnet evaluate``.

    Args:
        checkpoint: ``best.pt`` / ``last.pt`` or a run folder.
        part: which subjects of the saved split: ``test`` (default) or ``val``.
        volumes: already prepared volumes of that part (e.g. ``trainer.data.test``); read from the dataset when
            omitted.
        data_root: dataset folder when it moved since training (default: the one in the checkpoint's config).
        device: torch device of the evaluation.
        with_hd95: also compute HD95 per class.

    Raises:
        CheckpointError: unreadable checkpoint.
        DataError: when the split holds no labelled volumes of that part (or the data cannot be read).
    """
    run = load_run(checkpoint, data_root, device=device)
    model, config, state = run.model, run.config, run.state
    split = run.require_split(checkpoint)
    if volumes is None:
        data = prepare_data(config.data, image_size=config.model.image_size, n_classes=config.model.n_classes,
                            split=split)
        volumes = data.test if part == "test" else data.val
    if not volumes:
        raise DataError(f"{checkpoint}: no labelled {part} volumes in {config.data.root}")
    class_names = list(run.class_names)
    report = evaluate_volumes(model, volumes, class_names=class_names, with_hd95=with_hd95)
    history = tuple(dict(h) for h in (state.get("history") or []))
    return CheckpointEvaluation(report=report, config=config, split=split, volumes=tuple(volumes), model=model,
                                class_names=tuple(class_names), history=history)


def most_foreground_slice(label: torch.Tensor | np.ndarray) -> int:
    """Index of the slice of a (S, H, W) label volume with the most foreground pixels (the slice figures show)."""
    return int((torch.as_tensor(label) > 0).flatten(1).sum(1).argmax())


def example_slices(volumes: Sequence[PreparedVolume], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One slice from each of the first ``count`` volumes, the one with the most foreground: what
    ``sdnet evaluate --figures`` shows.

    Returns:
        images (N, 1, H, W) and labels (N, H, W), N = min(count, len(volumes)).
    """
    picks = []
    for vol in volumes[:count]:
        k = most_foreground_slice(vol.label)
        picks.append((vol.image[k], vol.label[k]))
    if not picks:
        raise DataError("no volumes to take example slices from")
    return torch.stack([p[0] for p in picks]), torch.stack([p[1] for p in picks])
