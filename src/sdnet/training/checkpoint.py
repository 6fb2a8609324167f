"""Self-describing checkpoints, written atomically and loaded without unpickling arbitrary objects.

A checkpoint is a dict of plain values and tensors only: the resolved config (as a dict), the step and epoch, every
network's and optimiser's state, the fake-mask pool, RNG states, the data split, and the training history needed to
continue early stopping. The config names the orientation convention the model was trained in
(``data.orientation``); a checkpoint written before that key existed loads as ``legacy``. It is written to a
temporary file and renamed, so a run killed while saving leaves the previous checkpoint intact. Loading uses
``torch.load(weights_only=True)``: a file that would need to construct any other Python object (e.g. one crafted to
run code) is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from sdnet.errors import CheckpointError, OutputError, SDNetError
from sdnet.outputs import atomic_output, os_reason

FORMAT = "sdnet-checkpoint"
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomically write ``state`` (plain values and tensors only) to ``path``."""
    p = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    # a hidden temporary file unique to this process, renamed when complete: a failed write (full disk, a file-size
    # limit, Ctrl-C) leaves the previous checkpoint and no debris, and raises OutputError naming the file
    with atomic_output(p) as tmp:
        torch.save(payload, tmp)
    return p


class RunLock:
    """One writer per run folder: ``<run>/.lock`` holds the owner's PID for the life of the run.

    A lock whose process no longer exists (a killed run) is stale and taken over; a live one is refused with a
    :class:`~sdnet.errors.SDNetError` naming the folder and the PID.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> RunLock:
        for _ in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise SDNetError(f"{self.path.parent}: another sdnet process (PID {pid}) is writing this run "
                                     "folder; wait for it or use another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as exc:
                raise OutputError(f"{self.path.parent}: cannot write the run folder ({os_reason(exc)})") from None
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(str(os.getpid()))
            except OSError as exc:
                self.path.unlink(missing_ok=True)
                raise OutputError(f"{self.path.parent}: cannot write the run folder ({os_reason(exc)})") from None
            self.held = True
            return self
        raise SDNetError(f"{self.path}: could not take the run folder's lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand [^\s.,]+)")


def _unsafe_detail(exc: BaseException) -> str:
    """The part of torch's weights-only refusal that names what the file holds (e.g. ``GLOBAL os.system``) --
    without torch's advice to load it unsafely and without its terminal colour codes."""
    match = _GLOBAL.search(_ANSI.sub("", str(exc)))
    return f" ({match.group(1)})" if match else ""


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
    try:
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
