"""Stored models: checkpoint files, export folders, and the one way to load either with its run.

This module sits below training, evaluation, inference, the analyses and the studies: all of them load a stored
model through :func:`load_model` (network only) or :func:`load_run` (network, config with the data root moved,
subject split, class names), and the trainer writes checkpoints through :func:`save_checkpoint`.

A **checkpoint** (``best.pt`` / ``last.pt``) is a dict of plain values and tensors only: the resolved config (as a
dict), the step and epoch, every network's and optimiser's state, the fake-mask pool, RNG states, the data split,
and the training history needed to continue early stopping. The config names the orientation convention the model
was trained in (``data.orientation``); a checkpoint written before that key existed loads as ``legacy``. It is
written to a temporary file and renamed, so a run killed while saving leaves the previous checkpoint intact.
Loading uses ``torch.load(weights_only=True)``: a file that would need to construct any other Python object (e.g.
one crafted to run code) is refused with :class:`~sdnet.errors.CheckpointError`.

An **export folder** (written by :func:`sdnet.export.export_model`) holds ``model.safetensors`` (raw tensors and a
JSON header: nothing that can execute code when loaded) and ``model.json`` (config, labels, provenance); it is read
here like a checkpoint.

Example::

    run = load_run("runs/demo", data_root="/data/acdc")   # the checkpoint's model, config, split, class names
    seg = run.model.segment(images).labels
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from sdnet.config import RunConfig, apply_overrides, from_dict
from sdnet.data.splits import Split
from sdnet.errors import CheckpointError, SDNetError
from sdnet.models import SDNet, UNetSegmenter, build_segmenter
from sdnet.outputs import atomic_output
from sdnet.utils import resolve_device

FORMAT = "sdnet-checkpoint"
VERSION = 1

EXPORT_FORMAT = "sdnet-export"
EXPORT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomically write ``state`` (plain values and tensors only) to ``path``."""
    p = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    # a hidden temporary file unique to this process, renamed when complete: a failed write (full disk, a file-size
    # limit, Ctrl-C) leaves the previous checkpoint and no debris, and raises OutputError naming the file
    with atomic_output(p) as tmp:
        torch.save(payload, tmp)
    return p


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand [^\s.,]+)")


def _unsafe_detail(exc: BaseException) -> str:
    """The part of torch's weights-only refusal that names what the file holds (e.g. ``GLOBAL os.system``) --
    without torch's advice to load it unsafely and without its terminal colour codes."""
    match = _GLOBAL.search(_ANSI.sub("", str(exc)))
    return f" ({match.group(1)})" if match else ""


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like something ``torch.save`` writes: a zip archive (``PK``) or a legacy pickle
    (protocol opcode ``0x80``)."""
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError:
        return True  # let torch.load report it
    return head[:2] == b"PK" or head[:1] == b"\x80"


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only``); never executes code stored in the file.

    Raises:
        CheckpointError: missing, unreadable, unsafe, or not an sdnet checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise CheckpointError(f"{path}: no best.pt or last.pt in this folder")
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    if not _looks_like_torch_file(p):
        raise CheckpointError(f"{p}: not a checkpoint (neither a torch zip archive nor a pickle; sdnet writes "
                              "best.pt / last.pt in run folders)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing raw pickles
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{p}: refused to load: the file contains objects other than tensors and plain "
                              f"values{_unsafe_detail(exc)}; it may run code when unpickled, so sdnet never loads "
                              "it") from None
    except Exception as exc:  # torch.load raises many types on garbage (struct.error, RuntimeError, EOFError, ...)
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an sdnet checkpoint")
    if int(state.get("version", -1)) > VERSION:
        raise CheckpointError(f"{p}: checkpoint version {state.get('version')} is newer than this sdnet ({VERSION})")
    data = state.get("config", {}).get("data") if isinstance(state.get("config"), dict) else None
    if isinstance(data, dict) and "orientation" not in data:
        # written before the orientation convention: the model saw the files' voxel order and SSL4MIS slices as
        # stored (sdnet.data.orientation.LEGACY); evaluation and prediction must feed it the same
        data["orientation"] = "legacy"
    return state


def mismatch_summary(exc: BaseException) -> str:
    """One line for torch's multi-line ``load_state_dict`` error (which lists every key): how many keys are
    missing, unexpected or of another shape, with the first of each."""
    text = str(exc)
    parts: list[str] = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*)"),
                           ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)")):
        match = re.search(pattern, text)
        if match:
            keys = re.findall(r'"([^"]+)"', match.group(1))
            parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:2])})")
    shapes = re.findall(r"size mismatch for ([\w.]+): copying a param with shape (torch.Size\(\[[^]]*\]\)) from "
                        r"checkpoint, the shape in current model is (torch.Size\(\[[^]]*\]\))", text)
    if shapes:
        name, saved, current = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {name}: {saved[11:-1]} saved, {current[11:-1]} here)")
    if not parts:
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return first[:200]
    return "; ".join(parts)


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is an export folder (or its ``model.safetensors``)."""
    p = Path(path)
    return (p.is_dir() and (p / WEIGHTS).is_file() and (p / META).is_file()) or (
        p.name == WEIGHTS and (p.parent / META).is_file())


def load_export(path: str | Path, *, device: str | torch.device = "cpu"
                ) -> tuple[SDNet | UNetSegmenter, RunConfig, dict[str, Any]]:
    """Rebuild an exported model: (model in eval mode, its config, a checkpoint-like dict with ``labels``,
    ``class_names``, ``method``, ``config`` and ``split``).

    Raises:
        CheckpointError: a damaged or foreign folder, or weights that do not fit the config.
    """
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder / META}: not a readable export ({type(exc).__name__})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{folder}: not an sdnet export folder")
    if int(meta.get("version", -1)) > EXPORT_VERSION:
        raise CheckpointError(f"{folder}: export version {meta.get('version')} is newer than this sdnet")
    try:
        tensors = load_file(str(folder / WEIGHTS), device=str(device))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{folder / WEIGHTS}: not readable ({exc})") from None
    config = from_dict(RunConfig, meta["config"])
    model = build_segmenter(config.model, config.train.method).to(device)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder}: the weights do not match the config in {META} "
                              f"({mismatch_summary(exc)})") from None
    model.eval()
    state = {"format": EXPORT_FORMAT, "method": meta["method"], "config": meta["config"], "labels": meta["labels"],
             "class_names": meta["class_names"], "split": meta["provenance"].get("split") or {},
             "history": [], "export": meta}
    return model, config, state


def load_model(
    checkpoint: str | Path, *, device: str = "cpu"
) -> tuple[SDNet | UNetSegmenter, RunConfig, dict[str, Any]]:
    """Rebuild the network stored in a checkpoint (a ``.pt`` file or a run folder, where ``best.pt`` is preferred) or
    in an export folder:
    :class:`~sdnet.models.SDNet`, or :class:`~sdnet.models.UNetSegmenter` for the baselines (``train.method``
    ``unet``, ``gan``, ``selftrain``). Both have ``segment(x)``.

    An export folder written by :func:`sdnet.export.export_model` (``model.safetensors`` + ``model.json``) is read
    the same way.

    Returns:
        (model in eval mode, its config, the raw checkpoint dict — for an export, its labels, class names, method,
        config and split).
    """
    if is_export(checkpoint):
        return load_export(checkpoint, device=resolve_device(device))
    state = load_checkpoint(checkpoint, map_location=resolve_device(device))
    try:
        config = from_dict(RunConfig, state["config"])
        model = build_segmenter(config.model, config.train.method).to(device)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        detail = mismatch_summary(exc) if isinstance(exc, RuntimeError) else f"no {exc} entry"
        raise CheckpointError(f"{checkpoint}: checkpoint is incomplete or does not match its config "
                              f"({detail})") from None
    except SDNetError:
        raise
    model.eval()
    return model, config, state


@dataclass(frozen=True)
class LoadedRun:
    """A stored model with what is needed to use it on its own data.

    Attributes:
        model: the network in eval mode (:class:`~sdnet.models.SDNet` or, for the baselines,
            :class:`~sdnet.models.UNetSegmenter`).
        config: the run's config with the data overrides of :func:`load_run` applied.
        state: the raw checkpoint dict (for an export, the checkpoint-like dict of :func:`load_export`).
        split: the saved subject split, or ``None`` when none is stored (an export of a model without one).
        class_names: foreground class names 1..L.
    """

    model: SDNet | UNetSegmenter
    config: RunConfig
    state: dict[str, Any]
    split: Split | None
    class_names: tuple[str, ...]
    split_problem: str = ""

    @property
    def labels(self) -> dict[int, str]:
        """Label value → structure name of the model's output, background included (the dataset's label values
        when the checkpoint stores them, else 0..L with the class names)."""
        stored = {int(k): str(v) for k, v in (self.state.get("labels") or {}).items()}
        return stored or {0: "background", **{i + 1: n for i, n in enumerate(self.class_names)}}

    def require_split(self, checkpoint: str | Path) -> Split:
        """The saved split, or a one-line :class:`~sdnet.errors.CheckpointError` saying why there is none."""
        if self.split_problem:
            raise CheckpointError(f"{checkpoint}: {self.split_problem}")
        if self.split is None:
            raise CheckpointError(f"{checkpoint}: no subject split is stored with this model, so its test subjects "
                                  "are unknown; segment scans with `sdnet predict` and compare masks with `sdnet "
                                  "indices --reference`")
        return self.split


def load_run(checkpoint: str | Path, data_root: str | Path | None = None, *, device: str = "cpu",
             overrides: list[str] | tuple[str, ...] = ()) -> LoadedRun:
    """Load a checkpoint or export folder with its config and subject split, moving the dataset when asked.

    The one sequence behind ``sdnet evaluate``, the analyses, fine-tuning and the studies' test scores: load the
    network (:func:`load_model`), point ``data.root`` at ``data_root`` when the data moved since training, apply
    further ``--set``-style ``overrides`` (e.g. another ``data.modality``), and rebuild the saved subject split.

    Args:
        checkpoint: a ``.pt`` file, a run folder (``best.pt`` preferred) or an export folder.
        data_root: the dataset folder when it moved since training (default: the one in the config).
        device: torch device of the model.
        overrides: ``key=value`` config overrides applied after ``data_root``.

    Raises:
        CheckpointError: unreadable checkpoint (a stored split that cannot be read fails only
            :meth:`LoadedRun.require_split`).
    """
    model, config, state = load_model(checkpoint, device=device)
    changes = ([f"data.root={json.dumps(str(data_root))}"] if data_root is not None else []) + list(overrides)
    if changes:
        config = apply_overrides(config, changes)
    raw = state.get("split")
    split, problem = None, ""
    if raw:
        try:
            split = Split.from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:  # only what needs the split fails (evaluate, analyses)
            problem = f"the stored subject split is unreadable ({type(exc).__name__}: {exc})"
    return LoadedRun(model=model, config=config, state=state, split=split,
                     class_names=tuple(str(n) for n in state.get("class_names", ())), split_problem=problem)


def stored_split(checkpoint: str | Path) -> tuple[Split, str]:
    """The subject split and dataset folder a checkpoint was trained on, read without building its network (what
    fine-tuning with ``--init-from`` starts from).

    Raises:
        SDNetError: the checkpoint stores no usable split.
    """
    state = load_checkpoint(checkpoint)
    try:
        return Split.from_dict(state["split"]), str(state["config"]["data"]["root"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SDNetError(f"{checkpoint}: checkpoint has no usable subject split ({exc})") from None


def stored_config(checkpoint: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The resolved config stored in a checkpoint (a run folder: its ``last.pt``), with ``overrides`` applied."""
    p = Path(checkpoint)
    state = load_checkpoint(p / "last.pt" if p.is_dir() else p)
    try:
        config = from_dict(RunConfig, state["config"])
    except KeyError:
        raise CheckpointError(f"{checkpoint}: the checkpoint stores no config") from None
    return apply_overrides(config, list(overrides))
