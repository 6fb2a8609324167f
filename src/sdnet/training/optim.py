"""Keras-style Adam: Adam(lr, β1, β2, ε) with the inverse-time decay lr_t = lr / (1 + decay · t).

The authors compile four Keras models that share weights but each own an Adam state and its own update counter t
(authors-code §1.9–1.10): the supervised generator step, the unsupervised generator step, the z-regressor and the mask
discriminator. :class:`KerasAdam` reproduces one of them; ``t`` is saved in its ``state_dict``.

Speed (issue "Performance"): the update runs as torch's *fused* Adam kernel when every parameter is a floating
point tensor on a device with a fused kernel (the CPU has one since torch 2.4), else as the multi-tensor
(``foreach``) implementation, else as the per-parameter loop. All three compute the same Adam update; they differ
only in floating-point rounding (``tests/test_benchmarks.py`` checks agreement within 1e-6 after several steps).
The learning rate and its decay are set by :meth:`KerasAdam.step` exactly as before.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch

from sdnet.config import OptimConfig

AdamImplementation = Literal["auto", "fused", "foreach", "loop"]
"""``auto``: fused where supported, else foreach, else loop; the others force one implementation."""


def _fused_supported(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch has a fused Adam kernel for every parameter (floating point, supported device)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # torch without the helper (< 2.0): no fused CPU kernel either
        return False
    devices = _get_fused_kernels_supported_devices()
    return bool(params) and all(p.device.type in devices and torch.is_floating_point(p) for p in params)


def _adam_flags(params: list[torch.nn.Parameter], implementation: AdamImplementation) -> dict[str, bool]:
    """The ``fused`` / ``foreach`` keyword arguments of :class:`torch.optim.Adam` for ``implementation``."""
    if implementation == "auto":
        implementation = "fused" if _fused_supported(params) else "foreach"
    if implementation == "fused":
        return {"fused": True, "foreach": False}
    if implementation == "foreach":
        return {"fused": False, "foreach": True}
    if implementation == "loop":
        return {"fused": False, "foreach": False}
    raise ValueError(f"implementation must be 'auto', 'fused', 'foreach' or 'loop', got {implementation!r}")


class KerasAdam:
    """An Adam optimiser whose learning rate follows Keras' time-based decay.

    Args:
        params: parameters it updates.
        config: lr, betas, epsilon and decay.
        implementation: torch's Adam kernel: ``auto`` (default: fused where supported, else foreach), ``fused``,
            ``foreach`` or ``loop`` (torch's per-parameter reference loop). Not part of the saved state: a
            checkpoint written with one implementation loads into any other.
        gradient_sync: called with this optimiser's parameters just before every update (a data-parallel run
            averages their gradients over the processes there: :mod:`sdnet.training.distributed`).
        all_finite: a data-parallel run's agreement on the loss being finite (this process' flag → whether it is
            finite on every process), asked before every update so that all processes stop at the same step.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        config: OptimConfig,
        *,
        implementation: AdamImplementation = "auto",
        gradient_sync: Callable[[Sequence[torch.nn.Parameter]], None] | None = None,
        all_finite: Callable[[bool], bool] | None = None,
    ) -> None:
        self.config = config
        parameters = list(params)
        self.parameters = parameters
        self.gradient_sync = gradient_sync
        self.all_finite = all_finite
        try:
            self._flags = _adam_flags(parameters, implementation)
            self.optimizer = torch.optim.Adam(
                parameters, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, **self._flags
            )
        except RuntimeError:
            if implementation != "auto":
                raise
            # An older torch without a fused kernel for these parameters: the multi-tensor implementation.
            self._flags = _adam_flags(parameters, "foreach")
            self.optimizer = torch.optim.Adam(
                parameters, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, **self._flags
            )
        self.updates = 0

    @property
    def implementation(self) -> str:
        """The kernel in use: ``fused``, ``foreach`` or ``loop``."""
        if self._flags["fused"]:
            return "fused"
        return "foreach" if self._flags["foreach"] else "loop"

    @property
    def lr(self) -> float:
        """Learning rate of the next update: lr / (1 + decay · t)."""
        return self.config.lr / (1.0 + self.config.decay * self.updates)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self.gradient_sync is not None:
            self.gradient_sync(self.parameters)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.optimizer.step()
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # torch restores the saved per-group options, ``fused`` / ``foreach`` included; keep this optimiser's
        # implementation instead (so old checkpoints get the fast kernel, and a fused checkpoint loads where no
        # fused kernel exists). Setting the flags before loading also lets torch place the ``step`` counters
        # where the chosen kernel needs them.
        saved = copy.copy(state["optimizer"])
        saved["param_groups"] = [{**group, **self._flags} for group in saved["param_groups"]]
        self.optimizer.load_state_dict(saved)
        self.updates = int(state["updates"])
