"""The training loop of SDNet and of the paper's baselines: per-iteration schedule, validation, early stopping,
checkpoints, logs.

SDNet, per iteration (``train.schedule=steps``, authors-code §1.11): supervised step on a labelled batch;
z-reconstruction step; unsupervised step on an unlabelled batch; z-reconstruction step; discriminator step. Without
unlabelled images the run is fully supervised (first two steps only). Each update kind has its own Keras-style Adam
(authors-code §1.10). ``train.schedule=joint`` replaces the supervised and unsupervised steps by one generator update on
the paper's λ-weighted objective over both batches (one Adam), followed by one z-reconstruction step.

``train.method`` selects SDNet or a baseline of paper §4.3 (``unet``, ``gan``, ``selftrain``); the iteration of
each is in :mod:`sdnet.training.methods`, everything else here is shared, so every method gets the same optimiser,
batch size, epoch length (computed from the labelled and unlabelled pools, whether or not the method uses the
latter), validation, early stopping, checkpoint selection, resume and budget. Self-train splits the budget over
its rounds (see :mod:`sdnet.training.methods`). Checkpoints record the method and :func:`load_model` rebuilds the
matching network.

After every epoch the validation volumes are segmented and their mean 3D Dice (over classes and volumes) drives
early stopping (patience, min_delta) and best-checkpoint selection. Two checkpoints are kept in the run folder:
``best.pt`` (best validation Dice; what ``sdnet evaluate`` uses by default) and ``last.pt`` (the latest state; the
authors tested their last epoch). ``last.pt`` is also written every ``checkpoint_every`` iterations, and a killed
run continued with :meth:`Trainer.resume` ends with exactly the parameters of an uninterrupted run on the same
machine: batches are a pure function of (seed, step) and the RNG state travels in the checkpoint. With
``train.snapshot_steps`` the best checkpoint as it stood at those iterations is kept too (``best_s<N>.pt``: the
``best.pt`` of a run with ``max_steps=N``), so one long run also yields the shorter budgets.

Logs: ``log.jsonl`` (one JSON object per logged step and per epoch) and TensorBoard event files under ``tb/``
(:mod:`sdnet.training.logs`).

Mixed precision (``train.precision=bf16``): every training iteration runs under ``torch.autocast`` (bfloat16, no
loss scaling needed); the steps take their backward passes and updates outside it and the losses promote their
inputs to float32 (:mod:`sdnet.losses`). Parameters, optimiser state and checkpoints stay float32, and validation
and evaluation run in float32, so a checkpoint does not depend on the precision it was trained in.

Length: one class — the loop, every piece of state a checkpoint must hold for an exact resume (networks,
optimisers, pool, streams, RNG, early-stopping and self-train bookkeeping), and where a data-parallel run's
processes must agree (validation, budget, stop signals, checkpoints: :mod:`sdnet.training.distributed`). The
iterations themselves live in :mod:`sdnet.training.methods` and :mod:`sdnet.training.steps`, starting a run in
:mod:`sdnet.training.start`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from sdnet.checkpoint import load_checkpoint, mismatch_summary, save_checkpoint
from sdnet.config import RunConfig, apply_overrides, from_dict, save_config, to_dict
from sdnet.data.pipeline import TrainingData, prepare_data, save_split
from sdnet.data.sampling import BatchStream, SliceSet
from sdnet.data.splits import Split
from sdnet.errors import CheckpointError, RunInterrupted, SDNetError
from sdnet.evaluation import evaluate_volumes
from sdnet.models import MaskDiscriminator, SDNet, UNetSegmenter, build_discriminator, build_segmenter
from sdnet.outputs import atomic_output, check_writable, write_text
from sdnet.training.distributed import from_environment
from sdnet.training.logs import NoLogger, RunLog
from sdnet.training.methods import (
    ITERATIONS,
    IterationContext,
    Streams,
    pseudo_label,
    selftrain_stage_over,
    selftrain_teacher,
    with_pseudo_labels,
)
from sdnet.training.optim import KerasAdam
from sdnet.training.run_lock import RunLock
from sdnet.training.steps import (
    FakeMaskPool,
    NonFiniteLossError,
    factor_parameters,
    generator_parameters,
    volume_parameters,
    z_regressor_parameters,
)
from sdnet.training.teacher import AnatomyTeacher
from sdnet.utils import StopRequest, resolve_device, seed_everything, stop_signals

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    run_dir: Path
    steps: int
    epochs: int
    best_val_dice: float
    best_epoch: int
    stop_reason: str
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "last.pt"


class Trainer:
    """Trains SDNet, or the baseline named by ``config.train.method``, in ``run_dir`` according to ``config``.

    Args:
        config: the resolved run configuration (saved to ``run_dir/config.yaml``).
        run_dir: output folder (created).
        data: pre-built data (tests); by default built from ``config.data``.
        progress: show a tqdm progress bar.
        split: reuse this subject split (resume, fine-tuning) instead of drawing one.
        init_from: fine-tuning: start from the network weights of this checkpoint (a ``.pt`` file or a run folder)
            instead of a fresh initialisation; optimisers, schedule and budget start afresh. Weights of parts the
            checkpoint lacks (an area regressor added for the LV-volume task) keep their initialisation.
    """

    def __init__(
        self, config: RunConfig, run_dir: str | Path, *, data: TrainingData | None = None, progress: bool = False,
        split: Split | None = None, init_from: str | Path | None = None,
    ) -> None:
        self.config = config
        # a data-parallel run under torchrun (sdnet.training.distributed); None in one process
        self.group = from_environment(config.train.device)
        self.is_main = self.group is None or self.group.is_main
        rank, world = (self.group.rank, self.group.world_size) if self.group is not None else (0, 1)
        if config.train.batch_size % world:
            raise SDNetError(f"train.batch_size={config.train.batch_size} (the global batch) does not split over "
                             f"{world} processes; use a multiple of {world}")
        # before the data are read: fail in a second (rank 0 alone writes the run folder)
        self.run_dir = check_writable(run_dir, what="run folder") if self.is_main else Path(run_dir)
        self.progress = progress and self.is_main
        self.device = resolve_device(config.train.device)
        if self.group is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", self.group.local_rank)
        if config.train.num_threads > 0:
            torch.set_num_threads(config.train.num_threads)
        if config.train.precision == "bf16" and self.device.type == "cpu":
            log.warning("train.precision=bf16 on the CPU (capability %s): fast only with native bf16 instructions "
                        "(AVX512-BF16 / AMX); elsewhere it is emulated and far slower than fp32",
                        torch.backends.cpu.get_cpu_capability())
        mc = config.model
        self.data = data or prepare_data(config.data, image_size=mc.image_size, n_classes=mc.n_classes, split=split)
        self.class_names = [self.data.info.labels[v] for v in sorted(self.data.info.labels)][1:]
        seed_everything(config.train.seed)
        self.method = config.train.method
        self.model: SDNet | UNetSegmenter = build_segmenter(mc, self.method).to(self.device)
        if init_from is not None:
            self._initialise_from(init_from)
        if config.train.sync_batchnorm and self.group is not None:
            if self.device.type != "cuda":
                raise SDNetError("train.sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm has no CPU "
                                 "kernel); on the CPU each process normalises with its shard's statistics")
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        # unet ignores the unlabelled images; selftrain uses them through pseudo-labels (rounds >= 1)
        self.semi_supervised = self.data.unlabelled is not None and self.method != "unet"
        self.use_discriminator = self.semi_supervised and config.loss.adv > 0 and self.method in ("sdnet", "gan")
        self.discriminator: MaskDiscriminator | None = (
            build_discriminator(mc).to(self.device) if self.use_discriminator else None
        )
        oc = config.optim
        sync = self.group.average_gradients if self.group is not None else None
        agree = self.group.all_finite if self.group is not None else None

        def adam(params: Iterator[torch.nn.Parameter] | list[torch.nn.Parameter]) -> KerasAdam:
            return KerasAdam(params, oc, gradient_sync=sync, all_finite=agree)

        if isinstance(self.model, SDNet) and config.train.schedule == "joint":
            # the paper's single objective: one Adam for the joint generator update
            self.optimisers: dict[str, KerasAdam] = {
                "generator": adam(generator_parameters(self.model)),
                "zrec": adam(z_regressor_parameters(self.model)),
            }
            if self.data.volume is not None and config.loss.vol > 0:
                self.optimisers["volume"] = adam(volume_parameters(self.model))
        elif isinstance(self.model, SDNet):
            self.optimisers = {
                "supervised": adam(generator_parameters(self.model)),
                "zrec": adam(z_regressor_parameters(self.model)),
            }
            if self.semi_supervised:
                self.optimisers["unsupervised"] = adam(generator_parameters(self.model))
            if self.data.volume is not None and config.loss.vol > 0:
                self.optimisers["volume"] = adam(volume_parameters(self.model))
            if config.loss.plus:
                self.optimisers["factors"] = adam(factor_parameters(self.model))
        else:
            self.optimisers = {"supervised": adam(self.model.parameters())}
            if self.discriminator is not None:  # gan: the adversarial generator update has its own Adam state
                self.optimisers["unsupervised"] = adam(self.model.parameters())
            if self.method == "gan" and config.loss.mix > 0:  # ganplus-input: SDNet+'s factor step on the inputs
                self.optimisers["factors"] = adam(self.model.parameters())
        if self.discriminator is not None:
            self.optimisers["discriminator"] = adam(self.discriminator.parameters())
        self.pool = FakeMaskPool(config.train.fake_pool_size)
        if self.group is not None:
            # equal parameters on every process from the start (as DDP's broadcast when it wraps a module); then
            # each process draws its own VAE noise and pool samples (rank 0 keeps the single-process stream)
            for net in (self.model, self.discriminator):
                if net is not None:
                    self.group.broadcast_module(net)
            if rank:
                torch.manual_seed(self._process_seed())
        # SDNet+'s mean teacher: a copy of the (initialised, broadcast) segmentation path
        self.teacher: AnatomyTeacher | None = (
            AnatomyTeacher(self.model, config.train.plus_teacher)
            if isinstance(self.model, SDNet) and config.loss.plus and config.train.plus_teacher > 0 else None
        )
        tc = config.train
        self.labelled_stream = self._stream(self.data.labelled, "labelled")
        self.unlabelled_stream = (
            self._stream(self.data.unlabelled, "unlabelled")
            if self.data.unlabelled is not None and self.method in ("sdnet", "gan") else None
        )
        self.real_stream = self._stream(self.data.real_masks, "real_masks")
        self.volume_stream = (
            self._stream(self.data.volume, "volume") if self.data.volume is not None and "volume" in self.optimisers
            else None
        )
        if config.loss.vol > 0 and self.data.volume_class is None:
            raise SDNetError(f"loss.vol > 0 but the dataset has no label called {config.data.volume_class!r} "
                             f"(labels: {self.class_names}); set data.volume_class")
        # selftrain: round 0 = labelled images only; round k >= 1 adds the pseudo-labelled unlabelled images
        self.selftrain_round = 0
        self.pseudo_labels: torch.Tensor | None = None
        if self.method == "selftrain" and self.data.unlabelled is None:
            log.warning("selftrain without unlabelled images: every round trains on the labelled images only")
        n_images = max(len(self.data.labelled), len(self.data.unlabelled) if self.data.unlabelled else 0)
        self.steps_per_epoch = tc.steps_per_epoch or math.ceil(n_images / tc.batch_size)
        # progress state
        self.step = 0
        self.epoch = 0
        self.best_val = -math.inf
        self.best_epoch = -1
        self.stale_epochs = 0
        self.patience_ref = -math.inf
        self.elapsed = 0.0
        self.history: list[dict[str, float]] = []
        # running sums of the logged terms over the current epoch (checkpointed: a resumed epoch's mean_* covers
        # every iteration of the epoch, not only those after the resume)
        self.epoch_sums: dict[str, float] = {}
        self.epoch_count = 0
        self._resumed_from: int | None = None
        self._stop_request = StopRequest()

    def _stream(self, data: SliceSet, name: str) -> BatchStream:
        d, tc = self.config.data, self.config.train
        shard = (self.group.rank, self.group.world_size) if self.group is not None else (0, 1)
        return BatchStream(data, batch_size=tc.batch_size, seed=tc.seed, name=name, max_rotation=d.augment_rotation,
                           flip=d.augment_flip, intensity_strength=d.augment_intensity, shard=shard)

    def _initialise_from(self, checkpoint: str | Path) -> None:
        """Copy the network weights of ``checkpoint`` into the model (fine-tuning); only an area regressor may be
        missing from it."""
        state = load_checkpoint(checkpoint, map_location=self.device)
        saved = str(state.get("method", "sdnet"))
        if saved != self.method:
            raise CheckpointError(f"{checkpoint}: trained with train.method={saved}, this run has {self.method}")
        try:
            result = self.model.load_state_dict(state["model"], strict=False)
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{checkpoint}: its network does not match this run's model config "
                                  f"({mismatch_summary(exc)})") from None
        missing = [k for k in result.missing_keys if not k.startswith("area_regressor.")]
        if missing or result.unexpected_keys:
            raise CheckpointError(f"{checkpoint}: its network does not match this run's model config (missing "
                                  f"{missing[:5]}, unexpected {list(result.unexpected_keys)[:5]})")
        log.info("initialised the network from %s (fine-tuning)", checkpoint)

    @property
    def train_size(self) -> int:
        """Slices the supervised step draws from: the labelled ones (plus the pseudo-labelled ones in self-train
        rounds >= 1)."""
        return len(self.labelled_stream.data)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "method": self.method,
            "config": to_dict(self.config),
            "split": self.data.split.to_dict(),
            "class_names": self.class_names,
            "labels": {str(k): v for k, v in self.data.info.labels.items()},
            "step": self.step,
            "epoch": self.epoch,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "stale_epochs": self.stale_epochs,
            "patience_ref": self.patience_ref,
            "elapsed": self.elapsed,
            "history": self.history,
            "epoch_sums": dict(self.epoch_sums),
            "epoch_count": self.epoch_count,
            "model": self.model.state_dict(),
            "discriminator": self.discriminator.state_dict() if self.discriminator is not None else {},
            "optimisers": {k: v.state_dict() for k, v in self.optimisers.items()},
            "pool": self.pool.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else {},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
            "world_size": self.group.world_size if self.group is not None else 1,
        }
        if self.group is not None:  # a collective: every process calls state_dict (through save) at the same step
            # each process' RNG and fake pool differ (its own noise, its own shard's masks); all are kept so that a
            # resumed run with the same world size continues every process exactly
            state["rng_ranks"] = self.group.gather(torch.get_rng_state())
            if self.device.type == "cuda":  # VAE noise on a GPU comes from that device's generator
                state["cuda_rng_ranks"] = self.group.gather(torch.cuda.get_rng_state(self.device))
            state["pool_ranks"] = self.group.gather(self.pool.state_dict())
        if self.method == "selftrain":
            state["selftrain"] = {"round": self.selftrain_round}
            if self.pseudo_labels is not None:
                state["selftrain"]["pseudo_labels"] = self.pseudo_labels  # (N_u, H, W) uint8
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = str(state.get("method", "sdnet"))  # checkpoints written before train.method existed are SDNet's
        if saved != self.method:
            raise CheckpointError(f"checkpoint was trained with train.method={saved}, this run has {self.method}")
        try:
            self.model.load_state_dict(state["model"])
            if self.discriminator is not None:
                self.discriminator.load_state_dict(state["discriminator"])
            for name, opt in self.optimisers.items():
                opt.load_state_dict(state["optimisers"][name])
            self.pool.load_state_dict(self._pool_state(state))
            if self.teacher is not None:
                if not state.get("teacher"):
                    raise CheckpointError("this run has an EMA teacher (train.plus_teacher > 0) but the checkpoint "
                                          "holds none: it was trained without one")
                self.teacher.load_state_dict(state["teacher"])
            torch.set_rng_state(self._rng_state(state))
            self._restore_cuda_rng(state)
            self.step = int(state["step"])
            self.epoch = int(state["epoch"])
            self.best_val = float(state["best_val"])
            self.best_epoch = int(state["best_epoch"])
            self.stale_epochs = int(state["stale_epochs"])
            self.patience_ref = float(state["patience_ref"])
            self.elapsed = float(state["elapsed"])
            self.history = list(state["history"])
            # absent from checkpoints written before the sums were saved: the epoch's means restart at the resume
            self.epoch_sums = {str(k): float(v) for k, v in dict(state.get("epoch_sums", {})).items()}
            self.epoch_count = int(state.get("epoch_count", 0))
            if self.method == "selftrain":
                selftrain = state["selftrain"]
                self.selftrain_round = int(selftrain["round"])
                self._use_pseudo_labels(selftrain.get("pseudo_labels"))
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            detail = mismatch_summary(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
            raise CheckpointError(f"checkpoint does not match this run's model/config ({detail})") from None
        self._resumed_from = self.step

    def _process_seed(self) -> int:
        """The seed of this process' own noise in a data-parallel run (rank 0: the run's seed, as in one process)."""
        return self.config.train.seed + 1_000_003 * (self.group.rank if self.group is not None else 0)

    def _rng_state(self, state: dict[str, Any]) -> torch.Tensor:
        """This process' saved RNG state; with another world size than the checkpoint's, say in one line what
        that changes."""
        saved_world = int(state.get("world_size", 1))
        world = self.group.world_size if self.group is not None else 1
        rank = self.group.rank if self.group is not None else 0
        if saved_world != world:
            if self.is_main:
                log.warning("resuming a run trained on %d process(es) with %d: the global batch and the data order "
                            "are unchanged, but BatchNorm statistics and VAE noise are per process, so the result "
                            "will not equal an uninterrupted %d-process run bit for bit", saved_world, world,
                            saved_world)
            if rank:
                return torch.Generator().manual_seed(self._process_seed()).get_state()
        ranks = state.get("rng_ranks")
        chosen: torch.Tensor = ranks[rank] if ranks and len(ranks) == world else state["rng"]["torch"]
        return chosen

    def _restore_cuda_rng(self, state: dict[str, Any]) -> None:
        """The CUDA generator state(s) of the checkpoint: per process in a data-parallel run (this process' own
        device), all devices of one process otherwise."""
        if self.device.type != "cuda":
            return
        ranks = state.get("cuda_rng_ranks")
        if self.group is not None:
            if ranks and len(ranks) == self.group.world_size:
                torch.cuda.set_rng_state(ranks[self.group.rank], self.device)
            else:
                torch.cuda.manual_seed(self._process_seed())
        elif state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def _pool_state(self, state: dict[str, Any]) -> dict[str, torch.Tensor]:
        """This process' saved fake pool (rank 0's, and the only one, in a single-process checkpoint)."""
        ranks = state.get("pool_ranks")
        world = self.group.world_size if self.group is not None else 1
        if ranks and len(ranks) == world:
            return dict(ranks[self.group.rank if self.group is not None else 0])
        return dict(state["pool"])

    def save(self, name: str) -> Path:
        """Write checkpoint ``name`` (rank 0 only; in a data-parallel run every process calls this at the same
        step, since the checkpoint holds every process' RNG state)."""
        state = self.state_dict()
        path = self.run_dir / name
        if self.is_main:
            save_checkpoint(state, path)
        return path

    @classmethod
    def resume(cls, run_dir: str | Path, *, overrides: list[str] | None = None, progress: bool = False) -> Trainer:
        """Continue the run in ``run_dir`` from its ``last.pt`` (config and split are read from the checkpoint).

        ``overrides`` may change the budget (``train.max_steps``, ``train.epochs``, ``train.max_minutes``, ...).
        """
        path = Path(run_dir) / "last.pt"
        state = load_checkpoint(path)
        config = from_dict(RunConfig, state["config"])
        if overrides:
            config = apply_overrides(config, overrides)
        split = Split.from_dict(state["split"])
        trainer = cls(config, run_dir, progress=progress, split=split)
        trainer.load_state_dict(state)
        return trainer

    # ------------------------------------------------------------------------------------------------ training
    def _validate_on_main(self) -> tuple[float, dict[str, float]]:
        """:meth:`validate_per_class` on rank 0, its result on every process (one process: just the call)."""
        if self.group is None:
            return self.validate_per_class()
        result = self.validate_per_class() if self.is_main else None
        val, classes = self.group.from_main(result)
        return float(val), dict(classes)

    def _main_decides(self, *flags: bool) -> tuple[bool, ...]:
        """Decisions taken on rank 0's clock and state (time budget, self-train stage), on every process."""
        if self.group is None:
            return flags
        return self.group.any(*(f and self.is_main for f in flags))

    def _any_process(self, flag: bool) -> bool:
        """True on every process when true on any (a stop signal delivered to one process stops them all)."""
        return flag if self.group is None else self.group.any(flag)[0]

    def validate(self) -> float:
        """Mean 3D Dice over classes and validation volumes (NaN if there are none)."""
        return self.validate_per_class()[0]

    def validate_per_class(self) -> tuple[float, dict[str, float]]:
        """Validation 3D Dice: the mean over classes (as :meth:`validate`) and each class's mean over the validation
        volumes, keyed by class name (NaN where undefined; empty without validation volumes)."""
        if not self.data.val:
            return math.nan, {}
        report = evaluate_volumes(self.model, self.data.val, class_names=self.class_names, with_hd95=False)
        means, _ = report.mean_std("3d")
        return report.mean_dice("3d"), {name: float(m) for name, m in zip(self.class_names, means, strict=True)}

    def context(self) -> IterationContext[Any]:
        """What an iteration reads and updates (:class:`~sdnet.training.methods.IterationContext`), as of now: the
        labelled stream changes when a self-train round adds pseudo-labels."""
        return IterationContext(
            model=self.model, discriminator=self.discriminator,
            streams=Streams(labelled=self.labelled_stream, unlabelled=self.unlabelled_stream, real=self.real_stream,
                            volume=self.volume_stream),
            optimisers=self.optimisers, pool=self.pool, weights=self.config.loss, n_classes=self.config.model.n_classes,
            volume_class=self.data.volume_class, device=self.device, plus_z=self.config.train.plus_z,
            plus_unlabelled=self.config.train.plus_unlabelled, teacher=self.teacher)

    def train_iteration(self) -> dict[str, float]:
        """One iteration of ``train.method``'s schedule (:data:`sdnet.training.methods.ITERATIONS`); returns the
        logged loss terms."""
        self.model.train()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                            enabled=self.config.train.precision == "bf16"):
            try:
                logs = ITERATIONS[self.method](self.context(), self.step, self.config.train.schedule)
            except NonFiniteLossError as exc:  # nothing of this iteration is saved: last.pt stays the finite state
                last = self.run_dir / "last.pt"
                kept = f"; {last} keeps the last periodic checkpoint" if last.is_file() else ""
                raise NonFiniteLossError(f"step {self.step + 1}: {exc}{kept}") from None
        self.step += 1
        return logs

    # ------------------------------------------------------------------------------------------------ self-train
    def _use_pseudo_labels(self, labels: torch.Tensor | None) -> None:
        """Train on the labelled slices plus the unlabelled ones with ``labels`` (N_u, H, W) (None: labelled only)."""
        self.pseudo_labels = labels
        data = self.data.labelled
        if labels is not None and self.data.unlabelled is not None:
            data = with_pseudo_labels(self.data.labelled, self.data.unlabelled, labels)
        self.labelled_stream = self._stream(data, "labelled")

    def _selftrain_stage_over(self, start: float) -> bool:
        """Whether the current self-train stage is over (always False for other methods and in the last round)."""
        return self.method == "selftrain" and selftrain_stage_over(
            self.config.train, round_=self.selftrain_round, step=self.step, steps_per_epoch=self.steps_per_epoch,
            stale_epochs=self.stale_epochs, minutes=(time.perf_counter() - start) / 60.0)

    def _next_selftrain_round(self, logger: RunLog) -> None:
        """Pseudo-label the unlabelled pool with the best model so far (``best.pt``; the current model if never
        validated), add it to the training set, reset the patience counter and checkpoint."""
        best = self.run_dir / "best.pt" if self.best_epoch >= 0 and self.is_main else None
        teacher = selftrain_teacher(self.model, best, self.device)
        labels = None
        if self.data.unlabelled is not None and self.is_main:
            labels = pseudo_label(teacher, self.data.unlabelled.images)
        if self.group is not None:  # one labelling for every process: rank 0's (its files, its BatchNorm statistics)
            labels = self.group.from_main(labels)
        self.selftrain_round += 1
        self._use_pseudo_labels(labels)
        self.stale_epochs, self.patience_ref = 0, -math.inf
        n_pseudo = 0 if labels is None else int(labels.shape[0])
        logger.write({"event": "selftrain_round", "step": self.step, "epoch": self.epoch,
                      "round": self.selftrain_round, "teacher_epoch": self.best_epoch,
                      "n_labelled": len(self.data.labelled), "n_pseudo": n_pseudo, "n_train": self.train_size},
                     "selftrain")
        log.info("self-train round %d at step %d: %d labelled + %d pseudo-labelled slices (teacher: epoch %d)",
                 self.selftrain_round, self.step, len(self.data.labelled), n_pseudo, self.best_epoch)
        self.save("last.pt")

    def _end_epoch(self, logger: RunLog, train_means: dict[str, float]) -> bool:
        """Validate, update best/patience, write checkpoints. Returns True when early stopping triggers."""
        tc = self.config.train
        val, val_classes = self._validate_on_main()
        self.epoch += 1
        self._snapshot(logger, passed=True)  # snapshots between the last validation and this one: without it
        if math.isfinite(val) and val > self.best_val:
            self.best_val, self.best_epoch = val, self.epoch
        if math.isfinite(val) and (not math.isfinite(self.patience_ref) or val > self.patience_ref + tc.min_delta):
            self.patience_ref, self.stale_epochs = val, 0
        else:
            self.stale_epochs += 1
        record: dict[str, Any] = {"event": "epoch", "step": self.step, "epoch": self.epoch, "val_dice": val,
                                  "best_val_dice": self.best_val, "elapsed_s": round(self.elapsed, 1)}
        record.update({f"val_dice_{name}": v for name, v in val_classes.items()})
        record.update({f"mean_{k}": v for k, v in train_means.items()})
        self.history.append({k: float(v) for k, v in record.items() if isinstance(v, (int, float))})
        logger.write(record, "epoch")
        if self.best_epoch == self.epoch or not math.isfinite(val):
            self.save("best.pt")
        self._snapshot(logger, passed=False)  # a snapshot at this very iteration: with this validation
        self.save("last.pt")
        log.info("epoch %d step %d val Dice %.4f (best %.4f @ %d)", self.epoch, self.step, val, self.best_val,
                 self.best_epoch)
        return tc.patience > 0 and self.stale_epochs >= tc.patience

    def snapshot_path(self, step: int) -> Path:
        """Where the best checkpoint as it stood at iteration ``step`` is kept (``train.snapshot_steps``); beside it
        ``best_s<N>.json`` says where training was then (epochs completed, best validation, elapsed time)."""
        return self.run_dir / f"best_s{step}.pt"

    def _snapshot(self, logger: RunLog, *, passed: bool, final: bool = False) -> None:
        """Copy ``best.pt`` to ``best_s<N>.pt`` once for each snapshot iteration N that is due, so that the copy is
        the ``best.pt`` a run with ``max_steps=N`` ends with:

        - ``passed``: N is below the current step, called at an epoch end before its validation may change the best
          (or, with ``final``, at the end of a run stopped by ``max_steps`` / ``max_minutes``: no validation since);
        - not ``passed``: N equals the current step, called after this epoch end's validation;
        - ``final`` and not ``passed``: the run ended (``epochs``, early stopping) before N, as a run with
          ``max_steps=N`` would have.

        A snapshot below the first validation (N < the epoch length) is never taken: a run of N iterations would be
        validated once at its end, which no longer exists here. Called before ``last.pt`` is written, so that a run
        killed in between redoes the epoch end and finds the copy made."""
        if not self.is_main:
            return
        for n in self.config.train.snapshots():
            if n < self.steps_per_epoch:
                continue  # warned at the start of fit()
            if final:
                due = self.step >= n if passed else self.step < n
            else:
                due = self.step > n if passed else self.step == n
            target = self.snapshot_path(n)
            best = self.run_dir / "best.pt"
            if not due or target.exists() or not best.exists():
                continue
            epochs = self.epoch - 1 if passed and not final else self.epoch  # epochs completed by iteration N
            record = {"step": n, "epochs": epochs, "best_val_dice": self.best_val, "best_epoch": self.best_epoch,
                      "elapsed_s": round(self.elapsed, 1), "taken_at_step": self.step}
            write_text(target.with_suffix(".json"), json.dumps(record, indent=1))  # before the .pt: it marks "done"
            with atomic_output(target) as tmp:
                shutil.copyfile(best, tmp)
            logger.write({"event": "snapshot", "step": n, "best_val_dice": self.best_val}, "snapshot")

    def data_summary(self) -> str:
        """One line on what this run trains on: labelled / unlabelled subjects and slices, the other parts of the
        split, and the iterations per epoch (what ``sdnet train`` prints before training)."""
        d = self.data
        volume = (f"{len(d.split.volume)} subjects with volume labels ({len(d.volume)} slices); "
                  if d.volume is not None and self.volume_stream is not None else "")
        return (f"data: {len(d.split.labelled)} labelled / {len(d.split.train)} training subjects "
                f"({len(d.labelled)} labelled slices, {len(d.unlabelled) if d.unlabelled else 0} unlabelled), "
                f"{len(d.split.val)} validation, {len(d.split.test)} test subjects; "
                f"{'semi-supervised' if self.semi_supervised else 'fully supervised'}; {volume}"
                f"{self.steps_per_epoch} iterations/epoch")

    def fit(self) -> TrainResult:
        """Train until max epochs, max steps, the time budget or early stopping; return the summary.

        Ctrl-C (SIGINT) or SIGTERM (a scheduler's pre-emption) ends the current iteration, saves ``last.pt`` and
        raises :class:`~sdnet.errors.RunInterrupted`; a second Ctrl-C stops at once (``last.pt`` is then the last
        periodic checkpoint). A folder that already holds a run (``last.pt``) is refused unless this trainer was
        resumed from it.

        Raises:
            SDNetError: the run folder holds another run, or another process is writing it.
            RunInterrupted: stopped by a signal after saving ``last.pt``.
            OutputError: a checkpoint or log could not be written (the previous checkpoint is intact).
        """
        if self._resumed_from is None and (self.run_dir / "last.pt").exists():
            raise SDNetError(f"{self.run_dir} already holds a run (last.pt); continue it with --resume "
                             f"{self.run_dir} or choose another --out")
        lock = RunLock(self.run_dir) if self.is_main else contextlib.nullcontext()
        with lock, self._stop_signals():
            return self._fit()

    @contextlib.contextmanager
    def _stop_signals(self) -> Iterator[None]:
        """While training: the first SIGINT/SIGTERM only sets a flag the loop checks after each iteration (so the
        saved state is that of a whole iteration); a second SIGINT raises KeyboardInterrupt at once, a second
        SIGTERM (a scheduler repeating itself) is ignored until the iteration ends (:func:`sdnet.utils.stop_signals`;
        outside the main thread the default behaviour stays)."""
        with stop_signals(escalate=(signal.SIGINT,)) as request:
            self._stop_request = request  # a signal that ended an earlier fit() of this trainer does not end this one
            yield

    def _fit(self) -> TrainResult:
        tc = self.config.train
        if self.is_main:
            save_config(self.config, self.run_dir / "config.yaml")
            save_split(self.data.split, self.run_dir)
        logger = RunLog(self.run_dir, resume_step=self._resumed_from) if self.is_main else NoLogger()
        early = [n for n in tc.snapshots() if n < self.steps_per_epoch]
        if early:
            log.warning("train.snapshot_steps %s: below the first validation (iteration %d), no snapshot is taken",
                        early, self.steps_per_epoch)
        start = time.perf_counter() - self.elapsed
        stop_reason = "epochs"
        bar = tqdm(total=self.steps_per_epoch, disable=not self.progress, leave=False, dynamic_ncols=True)
        try:
            while self.epoch < tc.epochs:
                bar.reset(total=self.steps_per_epoch)
                bar.update(max(self.step - self.epoch * self.steps_per_epoch, 0))
                bar.set_description(f"epoch {self.epoch + 1}")
                # True when resumed from the last.pt of an epoch's last iteration (written before its validation)
                epoch_done = self.step >= (self.epoch + 1) * self.steps_per_epoch
                while not epoch_done:
                    stage_over, out_of_time = self._main_decides(
                        self._selftrain_stage_over(start),
                        bool(tc.max_minutes) and (time.perf_counter() - start) / 60.0 >= tc.max_minutes)
                    if stage_over:
                        self._next_selftrain_round(logger)
                    if tc.max_steps and self.step >= tc.max_steps:
                        stop_reason = "max_steps"
                        break
                    if out_of_time:
                        stop_reason = "max_minutes"
                        break
                    logs = self.train_iteration()
                    self.elapsed = time.perf_counter() - start
                    for k, v in logs.items():
                        self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
                    self.epoch_count += 1
                    bar.update(1)
                    if self.step % tc.log_every == 0:
                        logger.write({"event": "step", "step": self.step, "epoch": self.epoch,
                                      "lr": next(iter(self.optimisers.values())).lr, **logs}, "train")
                        bar.set_postfix(dice_loss=f"{logs.get('sup_segm', float('nan')):.3f}")
                    if self.step % tc.checkpoint_every == 0:
                        self.save("last.pt")
                    if self._any_process(self._stop_request.signum is not None):
                        self.save("last.pt")
                        name = signal.Signals(self._stop_request.signum or signal.SIGTERM).name
                        raise RunInterrupted(f"{name} at step {self.step}: {self.run_dir / 'last.pt'} saved; "
                                             f"continue with: sdnet train --resume {self.run_dir}")
                    epoch_done = self.step >= (self.epoch + 1) * self.steps_per_epoch
                if not epoch_done:
                    break
                means = {k: v / max(self.epoch_count, 1) for k, v in self.epoch_sums.items()}
                self.epoch_sums, self.epoch_count = {}, 0
                if self._end_epoch(logger, means):
                    if self.method == "selftrain" and self.selftrain_round < tc.selftrain_rounds:
                        continue  # early stopping ends this self-train round, not the run
                    stop_reason = "early_stopping"
                    break
            else:
                stop_reason = "epochs"
            if stop_reason in ("max_steps", "max_minutes"):
                self.save("last.pt")
                if self.best_epoch < 0:  # never validated: make sure best.pt exists
                    self.best_val = self._validate_on_main()[0]
                    self.save("best.pt")
                self._snapshot(logger, passed=True, final=True)  # a rerun of fit() from last.pt redoes this
            else:
                self._snapshot(logger, passed=False, final=True)
        finally:
            bar.close()
            logger.close()
        result = TrainResult(run_dir=self.run_dir, steps=self.step, epochs=self.epoch, best_val_dice=self.best_val,
                             best_epoch=self.best_epoch, stop_reason=stop_reason, history=self.history)
        if self.is_main:
            write_text(self.run_dir / "result.json", json.dumps(
                {"method": self.method, "steps": result.steps, "epochs": result.epochs,
                 "best_val_dice": result.best_val_dice, "best_epoch": result.best_epoch, "stop_reason": stop_reason,
                 "elapsed_s": round(self.elapsed, 1), "processes": self.group.world_size if self.group else 1},
                indent=1))
        if self.group is not None:
            self.group.barrier()  # the others wait until rank 0 has written everything
        return result
