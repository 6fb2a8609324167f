"""The SDNet training loop: the authors' per-iteration schedule, validation, early stopping, checkpoints, logs.

Per iteration (facts §1.11): supervised step on a labelled batch; z-reconstruction step; unsupervised step on an
unlabelled batch; z-reconstruction step; discriminator step. Without unlabelled images the run is fully
supervised (first two steps only). Each update kind has its own Keras-style Adam (facts §1.10).

After every epoch the validation volumes are segmented and their mean 3D Dice (over classes and volumes) drives
early stopping (patience, min_delta) and best-checkpoint selection. Two checkpoints are kept in the run folder:
``best.pt`` (best validation Dice; what ``sdnet evaluate`` uses by default) and ``last.pt`` (the latest state; the
authors tested their last epoch). ``last.pt`` is also written every ``checkpoint_every`` iterations, and a killed
run continued with :meth:`Trainer.resume` ends with exactly the parameters of an uninterrupted run on the same
machine: batches are a pure function of (seed, step) and the RNG state travels in the checkpoint.

Logs: ``log.jsonl`` (one JSON object per logged step and per epoch) and TensorBoard event files under ``tb/``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from sdnet.config import RunConfig, apply_overrides, from_dict, save_config, to_dict
from sdnet.data.pipeline import TrainingData, prepare_data, save_split
from sdnet.data.sampling import BatchStream
from sdnet.data.splits import Split
from sdnet.errors import CheckpointError, SDNetError
from sdnet.evaluation import evaluate_volumes
from sdnet.models import MaskDiscriminator, SDNet, build_discriminator, build_sdnet
from sdnet.training.checkpoint import load_checkpoint, save_checkpoint
from sdnet.training.optim import KerasAdam
from sdnet.training.steps import (
    FakeMaskPool,
    discriminator_step,
    generator_parameters,
    one_hot_foreground,
    supervised_step,
    unsupervised_step,
    z_reconstruction_step,
    z_regressor_parameters,
)
from sdnet.utils import seed_everything

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


class _Logger:
    """JSONL + TensorBoard writer. On resume, JSONL lines after the checkpoint's step are dropped."""

    def __init__(self, run_dir: Path, *, resume_step: int | None = None) -> None:
        self.path = run_dir / "log.jsonl"
        if resume_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if int(json.loads(line).get("step", 0)) <= resume_step:
                        kept.append(line)
                except (json.JSONDecodeError, ValueError, AttributeError):
                    continue
            self.path.write_text("".join(k + "\n" for k in kept))
        self._file = self.path.open("a")
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=resume_step)

    def write(self, record: dict[str, Any], prefix: str) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        step = int(record["step"])
        for key, value in record.items():
            if key not in ("step", "epoch", "event") and isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        self.tb.close()


class Trainer:
    """Trains an SDNet in ``run_dir`` according to ``config``.

    Args:
        config: the resolved run configuration (saved to ``run_dir/config.yaml``).
        run_dir: output folder (created).
        data: pre-built data (tests); by default built from ``config.data``.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self, config: RunConfig, run_dir: str | Path, *, data: TrainingData | None = None, progress: bool = False,
        split: Split | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = torch.device(config.train.device)
        if config.train.num_threads > 0:
            torch.set_num_threads(config.train.num_threads)
        mc = config.model
        self.data = data or prepare_data(config.data, image_size=mc.image_size, n_classes=mc.n_classes, split=split)
        self.class_names = [self.data.info.labels[v] for v in sorted(self.data.info.labels)][1:]
        seed_everything(config.train.seed)
        self.model: SDNet = build_sdnet(mc).to(self.device)
        self.semi_supervised = self.data.unlabelled is not None
        self.use_discriminator = self.semi_supervised and config.loss.adv > 0
        self.discriminator: MaskDiscriminator | None = (
            build_discriminator(mc).to(self.device) if self.use_discriminator else None
        )
        oc = config.optim
        self.optimisers: dict[str, KerasAdam] = {
            "supervised": KerasAdam(generator_parameters(self.model), oc),
            "zrec": KerasAdam(z_regressor_parameters(self.model), oc),
        }
        if self.semi_supervised:
            self.optimisers["unsupervised"] = KerasAdam(generator_parameters(self.model), oc)
        if self.discriminator is not None:
            self.optimisers["discriminator"] = KerasAdam(self.discriminator.parameters(), oc)
        self.pool = FakeMaskPool(config.train.fake_pool_size)
        tc, rot, flip = config.train, config.data.augment_rotation, config.data.augment_flip
        self.labelled_stream = BatchStream(
            self.data.labelled, batch_size=tc.batch_size, seed=tc.seed, name="labelled", max_rotation=rot,
            flip=flip,
        )
        self.unlabelled_stream = (
            BatchStream(self.data.unlabelled, batch_size=tc.batch_size, seed=tc.seed, name="unlabelled",
                        max_rotation=rot, flip=flip)
            if self.data.unlabelled is not None else None
        )
        self.real_stream = BatchStream(
            self.data.real_masks, batch_size=tc.batch_size, seed=tc.seed, name="real_masks", max_rotation=rot,
            flip=flip,
        )
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
        self._resumed_from: int | None = None

    # ------------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
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
            "model": self.model.state_dict(),
            "discriminator": self.discriminator.state_dict() if self.discriminator is not None else {},
            "optimisers": {k: v.state_dict() for k, v in self.optimisers.items()},
            "pool": self.pool.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            if self.discriminator is not None:
                self.discriminator.load_state_dict(state["discriminator"])
            for name, opt in self.optimisers.items():
                opt.load_state_dict(state["optimisers"][name])
            self.pool.load_state_dict(state["pool"])
            torch.set_rng_state(state["rng"]["torch"])
            if self.device.type == "cuda" and state["rng"].get("cuda"):
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
            self.step = int(state["step"])
            self.epoch = int(state["epoch"])
            self.best_val = float(state["best_val"])
            self.best_epoch = int(state["best_epoch"])
            self.stale_epochs = int(state["stale_epochs"])
            self.patience_ref = float(state["patience_ref"])
            self.elapsed = float(state["elapsed"])
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint does not match this run's model/config ({exc})") from None
        self._resumed_from = self.step

    def save(self, name: str) -> Path:
        return save_checkpoint(self.state_dict(), self.run_dir / name)

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
    def validate(self) -> float:
        """Mean 3D Dice over classes and validation volumes (NaN if there are none)."""
        if not self.data.val:
            return math.nan
        report = evaluate_volumes(self.model, self.data.val, class_names=self.class_names, with_hd95=False)
        return report.mean_dice("3d")

    def train_iteration(self) -> dict[str, float]:
        """One iteration of the authors' schedule; returns the logged loss terms."""
        cfg, s = self.config, self.step
        n_classes = cfg.model.n_classes
        self.model.train()
        x, m = self.labelled_stream.batch(s)
        assert m is not None
        x, m = x.to(self.device), m.to(self.device)
        logs: dict[str, float] = {}
        sup = supervised_step(self.model, x, m, self.optimisers["supervised"], cfg.loss, n_classes=n_classes)
        logs.update({f"sup_{k}": v for k, v in sup.losses.items()})
        if cfg.loss.zrec > 0 and sup.anatomy is not None:
            zr = z_reconstruction_step(self.model, sup.anatomy, self.optimisers["zrec"], cfg.loss)
            logs["sup_zrec"] = zr.losses["zrec"]
        if self.unlabelled_stream is not None:
            xu, _ = self.unlabelled_stream.batch(s)
            xu = xu.to(self.device)
            uns = unsupervised_step(self.model, self.discriminator, xu, self.optimisers["unsupervised"], cfg.loss)
            logs.update({f"unsup_{k}": v for k, v in uns.losses.items()})
            if cfg.loss.zrec > 0 and uns.anatomy is not None:
                zr = z_reconstruction_step(self.model, uns.anatomy, self.optimisers["zrec"], cfg.loss)
                logs["unsup_zrec"] = zr.losses["zrec"]
            if self.discriminator is not None and uns.fake_masks is not None:
                _, real = self.real_stream.batch(s)
                assert real is not None
                real_fg = one_hot_foreground(real.to(self.device), n_classes)
                fake = self.pool(uns.fake_masks)
                d = discriminator_step(self.discriminator, real_fg, fake, self.optimisers["discriminator"])
                logs["disc"] = d.losses["disc"]
        self.step += 1
        return logs

    def _end_epoch(self, logger: _Logger, train_means: dict[str, float]) -> bool:
        """Validate, update best/patience, write checkpoints. Returns True when early stopping triggers."""
        tc = self.config.train
        val = self.validate()
        self.epoch += 1
        if math.isfinite(val) and val > self.best_val:
            self.best_val, self.best_epoch = val, self.epoch
        if math.isfinite(val) and (not math.isfinite(self.patience_ref) or val > self.patience_ref + tc.min_delta):
            self.patience_ref, self.stale_epochs = val, 0
        else:
            self.stale_epochs += 1
        record: dict[str, Any] = {"event": "epoch", "step": self.step, "epoch": self.epoch, "val_dice": val,
                                  "best_val_dice": self.best_val, "elapsed_s": round(self.elapsed, 1)}
        record.update({f"mean_{k}": v for k, v in train_means.items()})
        self.history.append({k: float(v) for k, v in record.items() if isinstance(v, (int, float))})
        logger.write(record, "epoch")
        if self.best_epoch == self.epoch or not math.isfinite(val):
            self.save("best.pt")
        self.save("last.pt")
        log.info("epoch %d step %d val Dice %.4f (best %.4f @ %d)", self.epoch, self.step, val, self.best_val,
                 self.best_epoch)
        return tc.patience > 0 and self.stale_epochs >= tc.patience

    def fit(self) -> TrainResult:
        """Train until max epochs, max steps, the time budget or early stopping; return the summary."""
        tc = self.config.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.run_dir / "config.yaml")
        save_split(self.data.split, self.run_dir)
        logger = _Logger(self.run_dir, resume_step=self._resumed_from)
        start = time.perf_counter() - self.elapsed
        stop_reason = "epochs"
        bar = tqdm(total=self.steps_per_epoch, disable=not self.progress, leave=False, dynamic_ncols=True)
        sums: dict[str, float] = {}
        count = 0
        try:
            while self.epoch < tc.epochs:
                bar.reset(total=self.steps_per_epoch)
                bar.update(max(self.step - self.epoch * self.steps_per_epoch, 0))
                bar.set_description(f"epoch {self.epoch + 1}")
                epoch_done = False
                while not epoch_done:
                    if tc.max_steps and self.step >= tc.max_steps:
                        stop_reason = "max_steps"
                        break
                    if tc.max_minutes and (time.perf_counter() - start) / 60.0 >= tc.max_minutes:
                        stop_reason = "max_minutes"
                        break
                    logs = self.train_iteration()
                    self.elapsed = time.perf_counter() - start
                    for k, v in logs.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                    bar.update(1)
                    if self.step % tc.log_every == 0:
                        logger.write({"event": "step", "step": self.step, "epoch": self.epoch,
                                      "lr": self.optimisers["supervised"].lr, **logs}, "train")
                        bar.set_postfix(dice_loss=f"{logs.get('sup_segm', float('nan')):.3f}")
                    if self.step % tc.checkpoint_every == 0:
                        self.save("last.pt")
                    epoch_done = self.step >= (self.epoch + 1) * self.steps_per_epoch
                if not epoch_done:
                    break
                means = {k: v / max(count, 1) for k, v in sums.items()}
                sums, count = {}, 0
                if self._end_epoch(logger, means):
                    stop_reason = "early_stopping"
                    break
            else:
                stop_reason = "epochs"
            if stop_reason in ("max_steps", "max_minutes"):
                self.save("last.pt")
                if self.best_epoch < 0:  # never validated: make sure best.pt exists
                    self.best_val = self.validate()
                    self.save("best.pt")
        finally:
            bar.close()
            logger.close()
        result = TrainResult(run_dir=self.run_dir, steps=self.step, epochs=self.epoch, best_val_dice=self.best_val,
                             best_epoch=self.best_epoch, stop_reason=stop_reason, history=self.history)
        (self.run_dir / "result.json").write_text(json.dumps(
            {"steps": result.steps, "epochs": result.epochs, "best_val_dice": result.best_val_dice,
             "best_epoch": result.best_epoch, "stop_reason": stop_reason, "elapsed_s": round(self.elapsed, 1)},
            indent=1))
        return result


def load_model(checkpoint: str | Path, *, device: str = "cpu") -> tuple[SDNet, RunConfig, dict[str, Any]]:
    """Rebuild the SDNet stored in a checkpoint (a ``.pt`` file or a run folder, where ``best.pt`` is preferred).

    Returns:
        (model in eval mode, its config, the raw checkpoint dict).
    """
    state = load_checkpoint(checkpoint, map_location=device)
    try:
        config = from_dict(RunConfig, state["config"])
        model = build_sdnet(config.model).to(device)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint}: checkpoint is incomplete or does not match its config ({exc})") from None
    except SDNetError:
        raise
    model.eval()
    return model, config, state
