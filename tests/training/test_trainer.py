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


def test_kill_during_an_epoch_ends_validation_resumes_at_that_validation(tiny_phantom: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """The periodic last.pt of an epoch's last iteration is written before that epoch's validation; a run killed
    during the validation resumes there: it validates at the same step as an uninterrupted run (not one iteration
    later) and ends with the same parameters, history and best checkpoint."""
    def cfg() -> RunConfig:
        return tiny_config(tiny_phantom, max_steps=8, checkpoint_every=4, steps_per_epoch=4, epochs=2)

    straight = Trainer(cfg(), tmp_path / "straight")
    straight.fit()
    killed = Trainer(cfg(), tmp_path / "run")
    original = Trainer._end_epoch

    def die_in_validation(self: Trainer, logger: object, means: dict[str, float]) -> bool:
        if self.step == 4:
            raise KeyboardInterrupt("killed during the validation at step 4")
        return original(self, logger, means)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "_end_epoch", die_in_validation)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    monkeypatch.setattr(Trainer, "_end_epoch", original)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["step"], state["epoch"]) == (4, 0)  # the epoch's end not yet done
    resumed = Trainer.resume(tmp_path / "run")
    resumed.fit()
    assert [h["step"] for h in resumed.history] == [h["step"] for h in straight.history] == [4, 8]
    assert [h["val_dice"] for h in resumed.history] == [h["val_dice"] for h in straight.history]
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


def _same_best(a: Path, b: Path) -> None:
    """Two checkpoints hold the same best model: step, validation score, epoch and every parameter."""
    x, y = load_checkpoint(a), load_checkpoint(b)
    assert (x["step"], x["best_val"], x["best_epoch"]) == (y["step"], y["best_val"], y["best_epoch"]), (a, b)
    for key, value in x["model"].items():
        assert torch.equal(value, y["model"][key]), (a, b, key)


def _snapshot_config(root: Path, max_steps: int, snapshots: str = "", *extra: str) -> RunConfig:
    return apply_overrides(tiny_config(root), ["loss.ce=1", "train.steps_per_epoch=5", "train.epochs=5",
                                               f"train.max_steps={max_steps}", f'train.snapshot_steps="{snapshots}"',
                                               *extra])


def test_snapshots_equal_the_best_checkpoint_of_shorter_runs(tiny_phantom: Path, tmp_path: Path):
    """best_s<N>.pt of one long run is the best.pt of a run with max_steps=N: between two epoch ends (N = 7: without
    the validation at 10, which improved on the one at 5) and at one (N = 15: with that epoch's validation)."""
    long = Trainer(_snapshot_config(tiny_phantom, 25, "15,7"), tmp_path / "long")
    long.fit()
    assert long.snapshot_path(15) == tmp_path / "long" / "best_s15.pt"
    vals = {h["step"]: h["val_dice"] for h in long.history}
    assert vals[10] > vals[5], "precondition: the validation after iteration 7 changed the best"
    assert load_checkpoint(tmp_path / "long" / "best.pt")["step"] > 15, "precondition: the best moved on after 15"
    assert load_checkpoint(tmp_path / "long" / "best_s7.pt")["step"] == 5
    for n, epochs in ((7, 1), (15, 3)):
        Trainer(_snapshot_config(tiny_phantom, n), tmp_path / f"short{n}").fit()
        _same_best(tmp_path / "long" / f"best_s{n}.pt", tmp_path / f"short{n}" / "best.pt")
        record = json.loads((tmp_path / "long" / f"best_s{n}.json").read_text())
        short = load_checkpoint(tmp_path / f"short{n}" / "last.pt")
        assert (record["step"], record["epochs"], record["best_epoch"]) == (n, epochs, short["best_epoch"])
        assert record["best_val_dice"] == short["best_val"]
    events = [r for r in _records(tmp_path / "long") if r["event"] == "snapshot"]
    assert [e["step"] for e in events] == [7, 15]


def test_snapshots_at_the_end_of_a_run(tiny_phantom: Path, tmp_path: Path):
    """After the last epoch end of a max_steps run (N = 22 and N = max_steps = 23, mid-epoch), and beyond the end of
    a run that stopped early (N = 15 > 10): each equals the best.pt of the shorter run, which ends the same way."""
    Trainer(_snapshot_config(tiny_phantom, 23, "22,23"), tmp_path / "long").fit()
    Trainer(_snapshot_config(tiny_phantom, 22), tmp_path / "short").fit()
    for n in (22, 23):
        _same_best(tmp_path / "long" / f"best_s{n}.pt", tmp_path / "short" / "best.pt")
        assert json.loads((tmp_path / "long" / f"best_s{n}.json").read_text())["epochs"] == 4
    stop = ("train.patience=1", "train.min_delta=1")  # no validation gains 1: early stopping after epoch 2
    early = Trainer(_snapshot_config(tiny_phantom, 0, "15", *stop), tmp_path / "early")
    assert early.fit().stop_reason == "early_stopping" and early.step == 10
    Trainer(_snapshot_config(tiny_phantom, 15, "", *stop), tmp_path / "early15").fit()
    _same_best(tmp_path / "early" / "best_s15.pt", tmp_path / "early15" / "best.pt")
