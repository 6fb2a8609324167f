"""Data-parallel training across processes (``torchrun``): the process group, gradient averaging, agreement.

``torchrun --nproc_per_node N -m sdnet train ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and a rendezvous address in their environment; :func:`from_environment` joins them into one
process group (gloo on the CPU, NCCL on CUDA devices, chosen from the device). Every process builds the same
networks from the same seed and takes its shard of every global batch (:class:`~sdnet.data.sampling.BatchStream`
``shard``), so batches stay a pure function of (seed, step) and the global batch is the config's.

**Why not ``torch.nn.parallel.DistributedDataParallel``.** DDP averages gradients inside ``backward`` and assumes
one forward and one backward per wrapped module per iteration. The authors' iteration (authors-code §1.11) runs up
to five updates, each through a different subset of the networks with its own optimiser (the decoder, for
example, is run by the supervised, unsupervised and z-reconstruction updates, and stepped by two of them). Here
each optimiser averages the gradients of *its own* parameters over the processes just before it steps
(:meth:`ProcessGroup.average_gradients`, one flat all-reduce per update) — the same arithmetic as DDP's reducer,
placed where the schedule needs it, so the per-step schedule stays exactly as in one process. Parameters start
equal (broadcast from rank 0) and every process applies the same averaged update, so they stay equal.

What differs from one process with the same global batch: BatchNorm normalises each shard with its own
statistics (``train.sync_batchnorm=true`` uses :class:`torch.nn.SyncBatchNorm` on CUDA; it has no CPU kernel),
the batch Dice loss is averaged over shards instead of computed over the global batch, and each process draws
its own VAE noise (seeded by rank). Rank 0 alone validates, logs and writes files; the others receive its
validation Dice, so early stopping and self-train rounds happen on every process at the same step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from sdnet.errors import SDNetError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class ProcessGroup:
    """This process' place in a data-parallel run.

    Attributes:
        rank: 0..world_size-1; rank 0 writes the run folder.
        world_size: number of processes.
        local_rank: index on this machine (the CUDA device of this process).
        backend: ``gloo`` or ``nccl``.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def average_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over the processes (one flat all-reduce). Parameters
        without a gradient are skipped (every process runs the same code, so the same ones lack one)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            g.copy_(synced)

    def all_finite(self, finite: bool) -> bool:
        """Whether a loss is finite on every process (one small all-reduce)."""
        return not self.any(not finite)[0]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers to every process (as DDP does when it wraps a module)."""
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true on every process when it is true on any (one small all-reduce)."""
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every process."""
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process' ``value``, in rank order, on every process."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher setting its variables) with more
    than one process."""
    return all(k in os.environ for k in ENV_KEYS) and int(os.environ["WORLD_SIZE"]) > 1


def from_environment(device: str) -> ProcessGroup | None:
    """Join the process group ``torchrun`` set up (``None`` outside one, or with one process).

    Args:
        device: ``train.device``; ``cuda`` picks NCCL and this process' ``LOCAL_RANK`` GPU, ``cpu`` gloo.

    Raises:
        SDNetError: malformed launcher variables, or a CUDA run with fewer GPUs than local processes.
    """
    if not launched_by_torchrun():
        return None
    try:
        rank, world, local = (int(os.environ[k]) for k in ENV_KEYS)
    except ValueError:
        raise SDNetError(f"torchrun variables {', '.join(f'{k}={os.environ[k]}' for k in ENV_KEYS)} are not "
                         "integers") from None
    cuda = device.startswith("cuda")
    if cuda and local >= torch.cuda.device_count():
        raise SDNetError(f"process {rank} (local rank {local}) has no GPU: this machine has "
                         f"{torch.cuda.device_count()}; start at most that many processes per node")
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        _init_process_group(backend, rank, world)
    return ProcessGroup(rank=rank, world_size=world, local_rank=local, backend=backend)


def _init_process_group(backend: str, rank: int, world: int) -> None:
    """``init_process_group`` from torchrun's variables, with one repair for restarts.

    torchrun's agent keeps one shared TCP store for all rendezvous rounds (``TORCHELASTIC_USE_AGENT_STORE``), and
    ``env://`` does not prefix the keys by round, so the workers of a restarted group can read the previous group's
    addresses and fail with "Connection refused" in gloo's ``connectFullMesh`` (seen in about 1 restart in 3 here).
    On one node the restart count is the same for every worker, so the keys are namespaced by it. Across nodes the
    agents' counts can differ; there the default applies and ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` in torchrun's
    environment gives each round its own store instead.
    """
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    one_node = os.environ.get("LOCAL_WORLD_SIZE") == os.environ.get("WORLD_SIZE")
    if restart not in ("", "0") and shared and one_node:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                              timeout=timedelta(minutes=30))
        dist.init_process_group(backend=backend, store=dist.PrefixStore(f"sdnet/restart{restart}", store), rank=rank,
                                world_size=world)
    else:
        dist.init_process_group(backend=backend)


def shutdown(*, together: bool = True) -> bool:
    """Leave the process group (at the end of ``sdnet train``); nothing outside one.

    Args:
        together: first wait until every process is here (a barrier), so that no process tears its connections
            down while another still writes or communicates (a process leaving early can make a peer's gloo abort
            at exit). ``False`` after an error, where a peer may never arrive.

    Returns:
        whether there was a process group to leave (a torchrun worker: end it with :func:`exit_worker`).
    """
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()
        return True
    return False


def exit_worker(code: int) -> NoReturn:
    """End a torchrun worker that has left its process group: flush the output streams and logging, then leave
    without the interpreter's and C++ libraries' teardown (``os._exit``).

    Why: on the CPU (gloo), a worker sometimes aborted *after* its work was done — "terminate called without an
    active exception", SIGABRT, during the interpreter's teardown with no Python frame left (seen with
    ``PYTHONFAULTHANDLER=1``; 3 of 40 runs of tests/training/ddp_worker.py beside two training runs, after the
    barrier and ``destroy_process_group``) — and torchrun then reports the whole finished run as failed. Every
    file is written and closed before this point; there is nothing left for the teardown to do.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(code)


def elastic_restart() -> bool:
    """Whether torchrun restarted this worker after a failure (``--max-restarts``): a run then continues from its
    ``last.pt``."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
