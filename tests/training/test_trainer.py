import json
from pathlib import Path

import pytest
import torch

from sdnet.checkpoint import load_checkpoint
from sdnet.config import RunConfig, apply_overrides
from sdnet.training import Trainer

from ..helpers import tiny_config


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_short_training_run_losses_fall(tiny_phantom: Path, tmp_path: Path):
    cfg = apply_overrides(tiny_config(tiny_phantom), ["optim.lr=2e-3", "train.steps_per_epoch=20", "train.epochs=3",
                                                      "train.log_every=1"])
    result = Trainer(cfg, tmp_path / "run").fit()
    steps = [r for r in _records(tmp_path / "run") if r["event"] == "step"]
    assert len(steps) == 60 and result.steps == 60 and result.epochs == 3
    first = sum(r["sup_segm"] for r in steps[:10]) / 10
    last = sum(r["sup_segm"] for r in steps[-10:]) / 10
    assert last < first - 0.05, (first, last)
    first_rec = sum(r["unsup_rec"] for r in steps[:10]) / 10
    last_rec = sum(r["unsup_rec"] for r in steps[-10:]) / 10
    assert last_rec < first_rec, (first_rec, last_rec)
    assert {"sup_zrec", "unsup_adv", "disc", "sup_kl"} <= set(steps[-1])
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "last.pt").exists()
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert len(result.history) == 3 and all(0 <= h["val_dice"] <= 1 for h in result.history)
    epochs = [r for r in _records(tmp_path / "run") if r["event"] == "epoch"]
    for r in epochs:  # per-class validation Dice beside the mean, whose average it is
        per_class = [r[f"val_dice_{name}"] for name in ("RV", "MYO", "LV")]
        assert all(0 <= d <= 1 for d in per_class)
        assert abs(sum(per_class) / 3 - r["val_dice"]) < 1e-9


def test_fully_supervised_when_no_unlabelled_images(tiny_phantom: Path, tmp_path: Path):
    cfg = apply_overrides(tiny_config(tiny_phantom), ["data.use_unlabelled=false", "train.epochs=1", "loss.ce=1"])
    trainer = Trainer(cfg, tmp_path / "run")
    assert not trainer.semi_supervised and trainer.discriminator is None
    trainer.fit()
    step = [r for r in _records(tmp_path / "run") if r["event"] == "step"][-1]
    assert "unsup_rec" not in step and "disc" not in step and "sup_segm" in step and "sup_ce" in step


def test_resume_equals_uninterrupted_run(tiny_phantom: Path, tmp_path: Path):
    n = 10  # spans two epochs of 4 and a partial one; checkpoint every 3 steps
    straight = Trainer(tiny_config(tiny_phantom, max_steps=n), tmp_path / "straight")
    straight.fit()
    first = Trainer(tiny_config(tiny_phantom, max_steps=n // 2), tmp_path / "resumed")
    first.fit()
    assert first.step == n // 2
    del first  # "killed"
    resumed = Trainer.resume(tmp_path / "resumed", overrides=[f"train.max_steps={n}"])
    assert resumed.step == n // 2
    resumed.fit()
    a = straight.model.state_dict()
    b = resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.discriminator is not None and resumed.discriminator is not None
    for key, value in straight.discriminator.state_dict().items():
        assert torch.equal(value, resumed.discriminator.state_dict()[key]), key
    steps_a = [r["step"] for r in _records(tmp_path / "straight") if r["event"] == "step"]
    steps_b = [r["step"] for r in _records(tmp_path / "resumed") if r["event"] == "step"]
    assert steps_a == steps_b
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == n


def test_kill_between_checkpoints_loses_nothing(tiny_phantom: Path, tmp_path: Path):
    """A run killed at step 8 whose last checkpoint is step 6 resumes from 6: same parameters, no duplicate logs."""
    import shutil

    def cfg(steps: int):
        return tiny_config(tiny_phantom, max_steps=steps, checkpoint_every=3, steps_per_epoch=100, log_every=1)

    straight = Trainer(cfg(9), tmp_path / "straight")
    straight.fit()
    Trainer(cfg(6), tmp_path / "run").fit()
    shutil.copy(tmp_path / "run" / "last.pt", tmp_path / "step6.pt")
    Trainer.resume(tmp_path / "run", overrides=["train.max_steps=8"]).fit()  # progress that the "kill" loses
    shutil.copy(tmp_path / "step6.pt", tmp_path / "run" / "last.pt")
    resumed = Trainer.resume(tmp_path / "run", overrides=["train.max_steps=9"])
    assert resumed.step == 6
    resumed.fit()
    steps = [r["step"] for r in _records(tmp_path / "run") if r["event"] == "step"]
    assert steps == list(range(1, 10))
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_nonfinite_loss_fails_loudly(tiny_phantom: Path, tmp_path: Path):
    from sdnet.training.steps import NonFiniteLossError

    trainer = Trainer(tiny_config(tiny_phantom, max_steps=2), tmp_path / "run")
    with torch.no_grad():
        for p in trainer.model.segmentor.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError):
        trainer.train_iteration()


def test_snapshots_equal_the_best_checkpoint_of_shorter_runs(tiny_phantom: Path, tmp_path: Path):
    """best_s<N>.pt of one long run is the best.pt of a run with max_steps=N: between two epoch ends (N = 7: without
    the validation at 10) and at one (N = 15: with that epoch's validation)."""
    def config(max_steps: int, snapshots: str = "") -> RunConfig:
        return apply_overrides(tiny_config(tiny_phantom), ["loss.ce=1", "train.steps_per_epoch=5", "train.epochs=5",
                                                           f"train.max_steps={max_steps}",
                                                           f'train.snapshot_steps="{snapshots}"'])

    long = Trainer(config(25, "15,7"), tmp_path / "long")
    long.fit()
    assert long.snapshot_path(15) == tmp_path / "long" / "best_s15.pt"
    events = [r for r in _records(tmp_path / "long") if r["event"] == "snapshot"]
    assert [(e["step"], e["taken_at_step"], e["file"]) for e in events] == [(7, 10, "best_s7.pt"),
                                                                          (15, 15, "best_s15.pt")]
    final = load_checkpoint(tmp_path / "long" / "best.pt")
    assert final["step"] > 15, "precondition: the long run found a better checkpoint after the snapshots"
    for k, n in enumerate((7, 15)):
        Trainer(config(n), tmp_path / f"short{n}").fit()
        short = load_checkpoint(tmp_path / f"short{n}" / "best.pt")
        snap = load_checkpoint(tmp_path / "long" / f"best_s{n}.pt")
        assert (snap["step"], snap["best_val"], snap["best_epoch"]) == (short["step"], short["best_val"],
                                                                        short["best_epoch"])
        for key, value in short["model"].items():
            assert torch.equal(value, snap["model"][key]), (n, key)
        assert events[k]["best_val_dice"] == short["best_val"] and events[k]["best_epoch"] == short["best_epoch"]
    assert load_checkpoint(tmp_path / "long" / "best_s7.pt")["step"] < load_checkpoint(
        tmp_path / "long" / "best_s15.pt")["step"], "precondition: the two snapshots differ"
