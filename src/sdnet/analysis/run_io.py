"""Loading a trained run for analysis, and writing what an analysis found: the I/O under :mod:`sdnet.analysis.runs`.

:func:`load_analysis_input` loads a checkpoint's model with the preprocessed volumes of its saved split's training
and test subjects; the helpers below encode those volumes in batches, read the phantom's ground truth, and write an
analysis' JSON, Markdown and figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from sdnet.checkpoint import load_run
from sdnet.config import RunConfig
from sdnet.data.pipeline import PreparedVolume, PreprocessedVolume, load_preprocessed
from sdnet.data.splits import Split
from sdnet.errors import SDNetError
from sdnet.models import SDNet
from sdnet.outputs import save_figure, write_text


@dataclass(frozen=True)
class AnalysisInput:
    """A checkpoint's model with its data: the preprocessed volumes of the saved split, by part.

    Attributes:
        model: the trained SDNet (eval mode).
        config: the run's config (with the data overrides of the analysis applied).
        split: the saved subject split.
        class_names: foreground class names 1..L.
        train / test: preprocessed volumes of the training / test subjects (every phase, labelled or not, every
            modality read).
        state: the raw checkpoint dict (its ``step``, the discriminator's weights, ...), as read once.
    """

    model: SDNet
    config: RunConfig
    split: Split
    class_names: tuple[str, ...]
    train: tuple[PreprocessedVolume, ...]
    test: tuple[PreprocessedVolume, ...]
    state: Mapping[str, Any]


def load_analysis_input(checkpoint: str | Path, *, data_root: str | Path | None = None,
                        modality: str | None = None) -> AnalysisInput:
    """Load a checkpoint, its config and split, and the volumes of its training and test subjects.

    Args:
        checkpoint: a ``.pt`` file or a run folder (``best.pt``).
        data_root: the dataset folder when it moved since training.
        modality: read these modalities instead of the trained ones (e.g. ``MR+CT`` for a transfer study).

    Raises:
        SDNetError: the checkpoint is not an SDNet (a baseline U-Net has no factors to analyse), or the data
            cannot be read.
    """
    overrides = [f"data.modality={json.dumps(modality)}", 'data.modality_mix=""'] if modality is not None else []
    run = load_run(checkpoint, data_root, overrides=overrides)
    model, config = run.model, run.config
    if not isinstance(model, SDNet):
        raise SDNetError(f"{checkpoint}: a {type(model).__name__} has no anatomy and modality factors to analyse "
                         f"(train.method={config.train.method}); analyse an SDNet checkpoint")
    split = run.require_split(checkpoint)
    _, volumes = load_preprocessed(config.data, config.model.image_size)
    model.eval()
    train = tuple(v for v in volumes if v.subject_id in set(split.train))
    test = tuple(v for v in volumes if v.subject_id in set(split.test))
    if not test:
        raise SDNetError(f"{config.data.root}: none of the checkpoint's {len(split.test)} test subjects found")
    return AnalysisInput(model=model, config=config, split=split, class_names=run.class_names, train=train,
                         test=test, state=run.state)


def prepared_volumes(volumes: Sequence[PreprocessedVolume]) -> list[PreparedVolume]:
    return [PreparedVolume.from_preprocessed(v) for v in volumes if v.label is not None]


def mean_std_text(pair: tuple[float, float], digits: int = 3) -> str:
    mean, std = pair
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_numbers(out: Path, name: str, numbers: dict[str, Any], lines: list[str]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    write_text(json_path, json.dumps(numbers, indent=1, default=float))
    write_text(md_path, "\n".join(lines) + "\n")
    return json_path, md_path


def image_grid(rows: list[list[np.ndarray]], titles: list[str], path: Path) -> Path:
    fig = Figure(figsize=(2.0 * len(titles), 2.0 * len(rows)))
    axes = fig.subplots(len(rows), len(titles), squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image, cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)
    return path


@torch.inference_mode()
def encode_batches(model: SDNet, images: torch.Tensor, *, pool: int | None = None, batch_size: int = 32
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """μ and log σ² (each (N, n_z)) and the anatomy maps s (N, C, H, W), or s average-pooled to pool × pool in each
    batch (memory), of images (N, 1, H, W), encoded in batches with z = μ; on the CPU."""
    mus, logvars, anatomies = [], [], []
    device = next(model.parameters()).device
    for start in range(0, images.shape[0], batch_size):
        enc = model.encode(images[start:start + batch_size].to(device), sample=False)
        mus.append(enc.modality.mu.cpu())
        logvars.append(enc.modality.logvar.cpu())
        s = enc.anatomy if pool is None else torch.nn.functional.adaptive_avg_pool2d(enc.anatomy, pool)
        anatomies.append(s.cpu())
    return torch.cat(mus), torch.cat(logvars), torch.cat(anatomies)


def volume_images(volumes: Sequence[PreprocessedVolume]) -> torch.Tensor:
    """Every slice of the volumes, (N, 1, H, W)."""
    return torch.from_numpy(np.concatenate([v.image for v in volumes])) if volumes else torch.zeros(0, 1, 1, 1)


def encode_mu(model: SDNet, volumes: Sequence[PreprocessedVolume]) -> tuple[np.ndarray, ...]:
    """μ, log σ² (each (N, n_z)) and the flattened anatomy maps (N, C·16·16, pooled to 16×16) of every slice."""
    mu, logvar, anatomy = encode_batches(model, volume_images(volumes), pool=16)
    return mu.numpy(), logvar.numpy(), anatomy.flatten(1).numpy()


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """min(k, n) indices spread evenly over range(n) (first and last included)."""
    indices: np.ndarray = np.linspace(0, n - 1, min(k, n)).round().astype(int)
    return indices


def slice_labels(volumes: Sequence[PreprocessedVolume], what: str) -> np.ndarray:
    return np.concatenate([np.full(v.image.shape[0], getattr(v, what)) for v in volumes]) if volumes else np.zeros(0)


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def phantom_truth(root: str | Path) -> dict[str, dict[str, Any]]:
    """subject id -> its ``phantom.json`` entry (anatomy and per-modality rendering parameters)."""
    path = Path(root) / "phantom.json"
    try:
        meta = json.loads(path.read_text())
        return {str(e["id"]): e for e in meta["subjects"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SDNetError(f"{path}: the true factors need a phantom written by `sdnet phantom` ({exc})") from None


def anatomy_maps(model: SDNet, volumes: Sequence[PreprocessedVolume]) -> torch.Tensor:
    """The anatomy maps s (N, C, H, W) of every slice of the volumes."""
    return encode_batches(model, volume_images(volumes))[2]


def dataset_modalities(root: str | Path) -> tuple[str, ...]:
    """The renderings of a phantom folder (empty for other datasets)."""
    path = Path(root) / "phantom.json"
    if not path.is_file():
        return ()
    try:
        return tuple(str(m) for m in json.loads(path.read_text())["modalities"])
    except (OSError, ValueError, KeyError, TypeError):
        return ()
