"""Small helpers: seeding, evaluation mode, devices, stop signals."""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sdnet.errors import SDNetError


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (weights init, VAE sampling, the fake pool)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def at_least_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Promote half-precision (bfloat16 / float16) tensors to float32; other dtypes pass unchanged (float64 stays
    float64). Used where mixed precision (``train.precision=bf16``) must not reach: losses and output heads."""
    return tuple(t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode and ``torch.inference_mode`` for the block; yields the model's device and restores its training
    flag afterwards (also when the block raises)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def resolve_device(name: str) -> torch.device:
    """The torch device called ``name`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``), checked to exist.

    Raises:
        SDNetError: a malformed name, or an accelerator this torch build or machine does not have (one line,
            instead of torch's traceback from deep inside the first tensor move).
    """
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SDNetError(f"device {name!r} is not a torch device name (e.g. cpu, cuda, cuda:0)") from None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise SDNetError(f"device {name!r}: this torch build ({torch.__version__}) has no CUDA support; use "
                             "--device cpu or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise SDNetError(f"device {name!r}: no CUDA GPU is available on this machine; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SDNetError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SDNetError(f"device {name!r}: Apple MPS is not available here; use cpu")
    return device


__all__ = ["at_least_float32", "evaluating", "resolve_device", "seed_everything"]


@dataclass
class StopRequest:
    """The stop signal received inside :func:`stop_signals` (``signum`` None while none came)."""

    signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number (SIGINT 130, SIGTERM 143)."""
        return 128 + int(self.signum) if self.signum is not None else 0


@contextmanager
def stop_signals(*, escalate: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """While the block runs, the first SIGINT or SIGTERM only records itself in the yielded :class:`StopRequest`
    (the work checks it between units and ends cleanly); a second one of the ``escalate`` signals raises
    ``KeyboardInterrupt`` at once (whatever is being written is abandoned; atomic writes remove their temporary
    file), other repeats are ignored. Outside the main thread, where signal handlers cannot be set, nothing
    changes."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request.signum is not None:
            if signum in escalate:
                raise KeyboardInterrupt
            return
        request.signum = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
