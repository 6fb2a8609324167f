"""Keras-style Adam: Adam(lr, β1, β2, ε) with the inverse-time decay lr_t = lr / (1 + decay · t).

The authors compile four Keras models that share weights but each own an Adam state and its own update counter t
(facts §1.9–1.10): the supervised generator step, the unsupervised generator step, the z-regressor and the mask
discriminator. :class:`KerasAdam` reproduces one of them; ``t`` is saved in its ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from sdnet.config import OptimConfig


class KerasAdam:
    """An Adam optimiser whose learning rate follows Keras' time-based decay.

    Args:
        params: parameters it updates.
        config: lr, betas, epsilon and decay.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], config: OptimConfig) -> None:
        self.config = config
        self.optimizer = torch.optim.Adam(
            list(params), lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps
        )
        self.updates = 0

    @property
    def lr(self) -> float:
        """Learning rate of the next update: lr / (1 + decay · t)."""
        return self.config.lr / (1.0 + self.config.decay * self.updates)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.optimizer.step()
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
