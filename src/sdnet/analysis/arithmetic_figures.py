"""Figures of latent arithmetic (paper Figures 7 and 8) from the results of :mod:`sdnet.analysis.arithmetic`.

Drawn with matplotlib's object API (``Figure``, no pyplot), so importing this module changes no global matplotlib
state (backend, open figures).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from sdnet.analysis.arithmetic import ArithmeticResult, InterpolationGrid
from sdnet.outputs import save_figure


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, p, dpi=dpi)
    return p


def arithmetic_figure(result: ArithmeticResult, path: str | Path, *, title: str = "", dpi: int = 110) -> Path:
    """Paper Figure 7: one row per image; input, reconstruction, source → target moved, swapped, permuted.

    Args:
        result: from :func:`channel_arithmetic`; images (B, 1, H, W) in [−1, 1], B small (≤ 6).
        path: output PNG; parent folders are created.
        title: figure title.
        dpi: resolution.

    Returns:
        The path written.
    """
    columns = [result.image, result.reconstruction, result.moved, result.swapped, result.permuted]
    heads = [
        "input x",
        "reconstruction",
        f"{result.source}→{result.target} moved",
        f"{result.source}↔{result.target} swapped",
        "permuted s",
    ]
    n = result.image.shape[0]
    fig = Figure(figsize=(1.8 * len(columns), 1.8 * n + 0.6))
    axes = fig.subplots(n, len(columns), squeeze=False)
    for row in range(n):
        for col, images in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(images[row, 0].float().numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, head in zip(axes[0], heads, strict=True):
        ax.set_title(head, fontsize=8)
    order = " ".join(str(int(c)) for c in result.permutation)
    caption = (f"{result.source} = s[{result.source_channel}], {result.target} = s[{result.target_channel}]; "
               f"permutation: {order}")
    fig.text(0.01, 0.005, caption, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path, dpi)


def interpolation_figure(grid: InterpolationGrid, path: str | Path, *, title: str = "", dpi: int = 110) -> Path:
    """Paper Figure 8: one row per z dimension; ``steps`` decodings, then the correlation and difference images.

    The decodings are grey in [−1, 1]; the correlation and the difference images share a diverging colormap on
    [−1, 1] (red positive, blue negative) with one colour bar.

    Args:
        grid: from :func:`z_interpolation`.
        path: output PNG; parent folders are created.
        title: figure title.
        dpi: resolution.

    Returns:
        The path written.
    """
    n_z, steps = grid.images.shape[:2]
    cols = steps + 2
    fig = Figure(figsize=(1.25 * cols + 0.8, 1.25 * n_z + 0.6), layout="constrained")
    axes = fig.subplots(n_z, cols, squeeze=False)
    mappable = None
    for i in range(n_z):
        for j in range(steps):
            axes[i, j].imshow(grid.images[i, j].float().numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[i, steps].imshow(grid.correlation[i].float().numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        mappable = axes[i, steps + 1].imshow(grid.difference[i].float().numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        axes[i, 0].set_ylabel(f"z{i}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    heads = [f"{float(v):g}" for v in grid.values] + ["correlation", "Δ image"]
    for ax, head in zip(axes[0], heads, strict=True):
        ax.set_title(head, fontsize=8)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes[:, steps:], shrink=0.6, label="correlation / Δ (rescaled [0, 1] images)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)
