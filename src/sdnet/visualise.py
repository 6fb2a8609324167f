"""Figures of a trained model (matplotlib's object API: no pyplot, no global backend switch): input, anatomy
channels, reconstruction, masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from sdnet.models import SDNet, Segmenter
from sdnet.outputs import save_figure
from sdnet.utils import evaluating

_MASK_COLOURS = ["#000000", "#e41a1c", "#4daf4a", "#377eb8", "#ff7f00", "#984ea3", "#ffff33", "#a65628"]
_COLOUR_NAMES = ["black", "red", "green", "blue", "orange", "purple", "yellow", "brown"]


@torch.inference_mode()
def decomposition_figure(
    model: Segmenter,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    path: str | Path,
    *,
    class_names: Sequence[str] = (),
    title: str = "",
) -> Path:
    """One row per image: input x, the C binary anatomy channels of s, reconstruction g(s, μ), prediction, truth.

    A baseline U-Net (no anatomy factor, no decoder) gets input, prediction and truth only.

    Args:
        model: trained SDNet or baseline U-Net (put in eval mode here).
        images: (N, 1, H, W) in [−1, 1], N small (≤ 6).
        labels: (N, H, W) class indices or None.
        path: output PNG.
    """
    anatomy: np.ndarray | None = None
    recon: np.ndarray | None = None
    with evaluating(model) as device:  # type: ignore[arg-type]
        if isinstance(model, SDNet):
            out = model(images.to(device), sample=False)
            anatomy = out.anatomy.cpu().numpy()  # (N, C, H, W)
            recon = out.reconstruction.cpu().numpy()  # (N, 1, H, W)
            probabilities = out.mask_probabilities
        else:
            probabilities = model.segment(images.to(device)).probabilities
    pred = probabilities.argmax(1).cpu().numpy()
    n = pred.shape[0]
    c = 0 if anatomy is None else anatomy.shape[1]
    extra = 0 if recon is None else 1  # the reconstruction column
    n_classes = probabilities.shape[1]
    colours = _MASK_COLOURS[: max(n_classes, 2)]
    cmap = ListedColormap(colours)
    cols = 1 + c + extra + 1 + (labels is not None)
    fig = Figure(figsize=(1.6 * cols, 1.7 * n + 0.4))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        row = axes[i]
        row[0].imshow(images[i, 0].cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
        for k in range(c):
            assert anatomy is not None
            row[1 + k].imshow(anatomy[i, k], cmap="gray", vmin=0, vmax=1)
        if recon is not None:
            row[c + 1].imshow(recon[i, 0], cmap="gray", vmin=-1, vmax=1)
        row[c + extra + 1].imshow(pred[i], cmap=cmap, vmin=0, vmax=len(colours) - 1, interpolation="nearest")
        if labels is not None:
            row[c + extra + 2].imshow(labels[i].cpu().numpy(), cmap=cmap, vmin=0, vmax=len(colours) - 1,
                                      interpolation="nearest")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    heads = ["input x"] + [f"s[{k}]" for k in range(c)] + ["reconstruction"] * extra + ["predicted mask"]
    if labels is not None:
        heads.append("true mask")
    for ax, head in zip(axes[0], heads, strict=True):
        ax.set_title(head, fontsize=8)
    if class_names:
        legend = ", ".join(f"{n} {_COLOUR_NAMES[(i + 1) % len(_COLOUR_NAMES)]}" for i, n in enumerate(class_names))
        fig.text(0.01, 0.005, f"mask colours: {legend}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, p, dpi=110)
    return p


def training_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Validation Dice and mean training losses per epoch."""
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    axes[0].plot(epochs, [h.get("val_dice", np.nan) for h in history], marker="o", ms=3)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("validation 3D Dice")
    for key in ("mean_sup_segm", "mean_sup_rec", "mean_unsup_rec", "mean_unsup_adv", "mean_disc", "mean_sup_zrec"):
        if any(key in h for h in history):
            axes[1].plot(epochs, [h.get(key, np.nan) for h in history], label=key.removeprefix("mean_"))
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("loss (unweighted)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    save_figure(fig, p, dpi=110)
    return p
