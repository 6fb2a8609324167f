"""Shareable weights: a trained model alone, as safetensors, with its resolved config and a model card; and the
segmentation path as ONNX.

An export folder holds:

* ``model.safetensors`` — the network's tensors only (no optimiser state, no pickle: safetensors stores raw
  tensors and a JSON header, nothing that can execute code when loaded);
* ``model.json`` — what is needed to rebuild and use it: the resolved run config (model sizes, preprocessing,
  ``data.orientation``), ``train.method``, the label values and names, and provenance (training data, split,
  seed, step, test scores when the run was evaluated, sdnet / torch versions);
* ``MODEL_CARD.md`` — the same for people: intended use, training data, split, orientation convention, scores;
* optionally ``model.onnx`` — image (B, 1, H, W) in [−1, 1] after the model's preprocessing → class
  probabilities (B, K, H, W), checked against PyTorch on random inputs when written.

:mod:`sdnet.checkpoint` reads it back: :func:`~sdnet.checkpoint.load_model` (and so ``predict``, ``evaluate`` and the
analyses) reads an export folder like a checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdnet import __version__
from sdnet.checkpoint import EXPORT_FORMAT, EXPORT_VERSION, META, WEIGHTS, load_model
from sdnet.config import RunConfig, to_dict
from sdnet.errors import SDNetError
from sdnet.outputs import atomic_output, check_writable, existing, name_some, remove_stale_temporaries, write_text

CARD = "MODEL_CARD.md"
ONNX = "model.onnx"


def _test_scores(run_dir: Path) -> dict[str, Any]:
    """Test scores found in a run folder: a study's ``result.json``, else ``eval_test/per_volume.csv``."""
    result = run_dir / "result.json"
    if result.is_file():
        try:
            data = json.loads(result.read_text())
        except json.JSONDecodeError:
            data = {}
        test = data.get("test") if isinstance(data, dict) else None
        if isinstance(test, dict) and "mean_dice_3d" in test:
            return {"source": "result.json", "n_volumes": test.get("n_volumes"),
                    "mean_dice_3d": test.get("mean_dice_3d"), "mean_dice_slice": test.get("mean_dice_slice"),
                    "dice_3d": test.get("dice_3d"), "dice_slice": test.get("dice_slice")}
    per_volume = run_dir / "eval_test" / "per_volume.csv"
    if per_volume.is_file():
        with per_volume.open() as f:
            rows = list(csv.DictReader(f))
        names = [k.removeprefix("dice3d_") for k in (rows[0] if rows else {}) if k.startswith("dice3d_")]
        means = {}
        for n in names:
            values = [float(r[f"dice3d_{n}"]) for r in rows if r[f"dice3d_{n}"] not in ("", "nan")]
            means[n] = float(np.mean(values)) if values else math.nan
        finite = [v for v in means.values() if math.isfinite(v)]
        return {"source": "eval_test/per_volume.csv", "n_volumes": len(rows), "dice_3d": means,
                "mean_dice_3d": float(np.mean(finite)) if finite else None}
    return {}


def _card(meta: dict[str, Any]) -> str:
    cfg, prov = meta["config"], meta["provenance"]
    data, model = cfg["data"], cfg["model"]
    scores = prov.get("test_scores") or {}
    lines = [
        f"# Model card: {meta['name']}", "",
        f"SDNet{'' if meta['method'] == 'sdnet' else ' baseline ' + meta['method']} (Chartsias et al., "
        "\"Disentangled representation learning in cardiac image analysis\", MedIA 2019), exported by sdnet "
        f"{prov['sdnet_version']} (torch {prov['torch_version']}).", "",
        "## Intended use", "",
        f"Segmentation of {', '.join(n for n in meta['class_names'])} in 2D {data['modality']} short-axis slices "
        "(every slice of a volume), research use only. Run it with `sdnet predict --checkpoint <this folder>`; "
        "inputs are preprocessed as in training (below).", "",
        "## Training", "",
        f"- data: format `{data['format']}`, root `{data['root']}`; split `{data['split']}` (seed "
        f"{data['split_seed']}, fold {data['fold']}); labelled training subjects: {prov.get('n_labelled', '?')} of "
        f"{prov.get('n_train', '?')}",
        f"- method `{meta['method']}`, schedule `{cfg['train']['schedule']}`, seed {cfg['train']['seed']}, "
        f"{prov.get('step', '?')} iterations, best validation 3D Dice {prov.get('best_val')}",
        f"- model: {model['image_size']} px input, anatomy channels C = {model['anatomy_channels']}, n_z = "
        f"{model['n_z']}, U-Net base filters {model['unet_filters']}, binarisation `{model['binarisation']}`",
        f"- preprocessing: in-plane resampling to {data['target_spacing_mm']} mm (0 = none), resize {data['resize']} "
        f"(0 = none), intensities clipped to the {data['clip_low']}–{data['clip_high']} percentiles and scaled to "
        "[−1, 1], centre crop/pad",
        f"- orientation convention: `{data['orientation']}` (see sdnet.data.orientation)", "",
        "## Test scores", "",
    ]
    if scores:
        lines.append(f"From `{scores.get('source')}` on {scores.get('n_volumes')} test volumes of the split: mean 3D "
                     f"Dice {scores.get('mean_dice_3d')}; per class {scores.get('dice_3d')}"
                     + (f"; per-slice {scores.get('mean_dice_slice')}" if scores.get("mean_dice_slice") else "")
                     + ".")
    else:
        lines.append("Not evaluated when exported (run `sdnet evaluate --checkpoint <run>` before exporting).")
    lines += ["", "## Test subjects", "", ", ".join(prov.get("test_subjects", [])) or "—", ""]
    return "\n".join(lines)


def export_model(checkpoint: str | Path, out_dir: str | Path, *, onnx: bool = False, name: str = "",
                 overwrite: bool = False) -> list[Path]:
    """Write ``checkpoint``'s network as an export folder (see the module docstring).

    Args:
        checkpoint: a ``.pt`` checkpoint or a run folder (``best.pt``).
        out_dir: the export folder (created).
        onnx: also write ``model.onnx`` (needs the ``onnx`` package; checked with ``onnxruntime`` when installed).
        name: the model's name in the card (default: the run folder's name).
        overwrite: replace an earlier export in ``out_dir`` (a ``model.onnx`` of it that this export does not
            rewrite is removed, so the folder never pairs new weights with an old ONNX graph).

    Returns:
        The written files.

    Raises:
        SDNetError: ``out_dir`` holds an export's files and ``overwrite`` is not set.
    """
    from safetensors.torch import save_file

    target = Path(out_dir)
    earlier = existing([target / WEIGHTS, target / META, target / CARD, target / ONNX])
    if earlier and not overwrite:
        raise SDNetError(f"{target} already holds {name_some(earlier)}; pass --overwrite to replace that export, or "
                         "choose another --out")
    model, config, state = load_model(checkpoint)
    src = Path(checkpoint)
    run_dir = src if src.is_dir() else src.parent
    out = check_writable(out_dir, what="export folder")
    remove_stale_temporaries(out)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(out / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": EXPORT_FORMAT, "version": str(EXPORT_VERSION)})
    split = state.get("split") or {}
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "name": name or run_dir.name,
        "method": config.train.method, "config": to_dict(config),
        "labels": {str(k): v for k, v in (state.get("labels") or {}).items()},
        "class_names": list(state.get("class_names") or []),
        "provenance": {
            "sdnet_version": __version__, "torch_version": torch.__version__,
            "checkpoint": str(src), "step": state.get("step"), "epoch": state.get("epoch"),
            "best_val": state.get("best_val"), "best_epoch": state.get("best_epoch"),
            "n_labelled": len(split.get("labelled", []) or []), "n_train": len(split.get("train", []) or []),
            "test_subjects": list(split.get("test", []) or []), "split": split,
            "test_scores": _test_scores(run_dir),
        },
    }
    write_text(out / META, json.dumps(meta, indent=1, default=float))
    write_text(out / CARD, _card(meta))
    written = [out / WEIGHTS, out / META, out / CARD]
    if onnx:
        written.append(export_onnx(model, config, out / ONNX))
    elif (out / ONNX).exists():
        (out / ONNX).unlink()  # the earlier export's graph: not these weights
    return written


class _SegmentationPath(nn.Module):
    """image (B, 1, H, W) -> class probabilities (B, K, H, W): ``model.segment(x).probabilities``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.segment(image).probabilities  # type: ignore[operator]
        return out


def export_onnx(model: nn.Module, config: RunConfig, path: str | Path, *, check: bool = True,
                atol: float = 1e-4) -> Path:
    """The segmentation path as ONNX (dynamic batch size), checked against PyTorch with onnxruntime.

    Raises:
        SDNetError: the ``onnx`` package is missing, or onnxruntime's output differs from PyTorch's by more than
            ``atol``.
    """
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise SDNetError("ONNX export needs the onnx package: pip install 'sdnet[onnx]'") from None
    wrapper = _SegmentationPath(model).eval()
    size = config.model.image_size
    example = torch.rand(2, config.model.in_channels, size, size) * 2 - 1
    p = Path(path)
    with atomic_output(p) as tmp:  # renamed only once written and checked: a failed check leaves no model.onnx
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, input_names=["image"],
                              output_names=["probabilities"], dynamic_axes={"image": {0: "batch"},
                                                                            "probabilities": {0: "batch"}},
                              opset_version=17)
        if check:
            image = torch.rand(3, config.model.in_channels, size, size) * 2 - 1
            difference = onnx_max_difference(wrapper, tmp, image)
            if difference is not None and difference > atol:
                raise SDNetError(f"{p}: onnxruntime output differs from PyTorch by {difference:.3g} (> {atol})")
    return p


def onnx_max_difference(model: nn.Module, path: str | Path, image: torch.Tensor) -> float | None:
    """Largest absolute difference between onnxruntime's and PyTorch's probabilities on ``image`` (None when
    onnxruntime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image.numpy().astype(np.float32)})[0]
    with torch.inference_mode():
        want = (model.segment(image).probabilities if not isinstance(model, _SegmentationPath)  # type: ignore[operator]
                else model(image)).numpy()
    return float(np.max(np.abs(got - want)))
