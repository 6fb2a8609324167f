"""Run under ``torchrun --nproc_per_node 2`` by tests/training/test_distributed.py: a short data-parallel training
of the tiny phantom that checks, after every iteration, that every process holds the same parameters, and that only
rank 0 writes files. Rank 0 saves the final parameters to ``<out>/final.pt``. First, gradient averaging is checked
against one process on a network without BatchNorm (``sync_error``).

    PYTHONPATH=. torchrun --nproc_per_node 2 tests/training/ddp_worker.py PHANTOM RUN_DIR OUT [KEY=VALUE ...]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist

import sdnet.training.trainer as trainer_module
from sdnet.config import apply_overrides
from sdnet.training import Trainer
from sdnet.training.distributed import exit_worker
from sdnet.training.steps import NonFiniteLossError
from tests.helpers import tiny_config


def parameters(t: Trainer) -> torch.Tensor:
    nets = [t.model] + ([t.discriminator] if t.discriminator is not None else [])
    return torch.cat([p.detach().flatten() for n in nets for p in n.parameters()])


def sync_error() -> float:
    """Gradient averaging against one process, on a network without BatchNorm and a per-image mean loss: the
    averaged shard gradients must equal the global batch's gradient (max abs difference returned)."""
    from sdnet.training.distributed import from_environment

    group = from_environment("cpu")
    assert group is not None
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(4, 1, 1))
    images, targets = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    torch.nn.functional.mse_loss(net(images), targets).backward()
    full = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    mine = slice(2 * group.rank, 2 * group.rank + 2)
    torch.nn.functional.mse_loss(net(images[mine]), targets[mine]).backward()
    group.average_gradients(list(net.parameters()))
    return max(float((p.grad - g).abs().max()) for p, g in zip(net.parameters(), full, strict=True))


def leave() -> NoReturn:
    """Leave the group together (no process tears gloo down while another still writes or communicates), then end
    the process as ``sdnet train`` does (:func:`sdnet.training.distributed.exit_worker`)."""
    dist.barrier()
    dist.destroy_process_group()
    exit_worker(0)


def main() -> NoReturn:
    phantom, run_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    error = sync_error()
    nan_on_rank1 = "nan-on-rank1" in sys.argv[4:]
    config = apply_overrides(tiny_config(phantom, batch_size=4), [a for a in sys.argv[4:] if a != "nan-on-rank1"])
    trainer = Trainer(config, run_dir)
    if nan_on_rank1:  # rank 1's images become NaN: every process must stop at the same update
        if dist.get_rank() == 1:
            trainer.labelled_stream.data.images.fill_(float("nan"))
        try:
            trainer.fit()
        except NonFiniteLossError as exc:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"stopped_rank{dist.get_rank()}.txt").write_text(f"{trainer.step}\n{exc}")
        leave()
    if not trainer.is_main:  # rank 1 must not write: every writer of the trainer raises here
        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"rank {dist.get_rank()} tried to write {args[:2]}")

        for name in ("save_checkpoint", "write_text", "save_config", "save_split"):
            setattr(trainer_module, name, refuse)
    checks = []
    step = trainer.train_iteration

    def checked() -> dict[str, float]:
        logs = step()
        mine = parameters(trainer)
        everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(everyone, mine)
        checks.append(all(torch.equal(everyone[0], other) for other in everyone[1:]))
        return logs

    trainer.train_iteration = checked  # type: ignore[method-assign]
    trainer.fit()
    if trainer.is_main:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"params": parameters(trainer), "equal_every_step": checks, "steps": trainer.step,
                    "sync_error": error},
                   out / "final.pt")
    leave()


if __name__ == "__main__":
    main()
