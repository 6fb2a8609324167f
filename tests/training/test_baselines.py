"""The paper's baselines (§4.3: U-Net, GAN, self-train) and the SDNet ablation flags, on the tiny phantom."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from sdnet.checkpoint import load_checkpoint, load_model
from sdnet.config import ConfigError, RunConfig, TrainConfig, apply_overrides
from sdnet.errors import CheckpointError
from sdnet.evaluation import evaluate_volumes
from sdnet.models import SDNet, UNetSegmenter
from sdnet.training import Trainer
from sdnet.training.methods import selftrain_stage_end

from ..helpers import tiny_config


def _records(run_dir: Path, event: str = "step") -> list[dict[str, Any]]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def _cfg(root: Path, method: str, **train: object) -> RunConfig:
    return tiny_config(root, method=method, **train)


def _assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ---------------------------------------------------------------------------------------------------- config


def test_bad_method_and_rounds_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"train\.method"):
        apply_overrides(RunConfig(), ["train.method=cnn"])
    with pytest.raises(ConfigError, match=r"train\.method"):
        TrainConfig(method="cnn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"train\.selftrain_rounds"):
        apply_overrides(RunConfig(), ["train.method=selftrain", "train.selftrain_rounds=0"])
    c = apply_overrides(RunConfig(), ["train.method=gan"])
    assert c.train.method == "gan" and RunConfig().train.method == "sdnet" and RunConfig().train.selftrain_rounds == 2


def test_selftrain_budget_is_split_equally() -> None:
    tc = TrainConfig(method="selftrain", selftrain_rounds=2, epochs=3, max_steps=9)
    assert [selftrain_stage_end(tc, 4, k) for k in range(3)] == [3, 6, 9]
    tc = TrainConfig(method="selftrain", selftrain_rounds=3, epochs=2)  # T = epochs x steps/epoch = 20
    assert [selftrain_stage_end(tc, 10, k) for k in range(4)] == [5, 10, 15, 20]


# ---------------------------------------------------------------------------------------------------- each method


@pytest.mark.parametrize("method", ["unet", "gan", "selftrain"])
def test_method_trains_and_its_checkpoint_evaluates(tiny_phantom: Path, tmp_path: Path, method: str) -> None:
    trainer = Trainer(_cfg(tiny_phantom, method, max_steps=6, log_every=1), tmp_path / "run")
    assert isinstance(trainer.model, UNetSegmenter)
    result = trainer.fit()
    assert result.steps == 6
    steps = _records(tmp_path / "run")
    assert len(steps) == 6
    for record in steps:
        losses = {k: v for k, v in record.items() if k not in ("event", "step", "epoch", "lr")}
        assert "sup_segm" in losses and all(math.isfinite(v) for v in losses.values()), record
        assert not any(k in losses for k in ("sup_rec", "sup_kl", "sup_zrec", "unsup_rec"))  # no SDNet terms
    state = load_checkpoint(tmp_path / "run" / "best.pt")
    assert state["method"] == method and state["config"]["train"]["method"] == method
    model, config, _ = load_model(tmp_path / "run")
    assert isinstance(model, UNetSegmenter) and config.train.method == method and not model.training
    report = evaluate_volumes(model, trainer.data.val, class_names=trainer.class_names, with_hd95=False)
    assert len(report.volumes) == len(trainer.data.val) and 0 <= report.mean_dice("3d") <= 1
    assert json.loads((tmp_path / "run" / "result.json").read_text())["method"] == method


def test_unet_ignores_unlabelled_images(tiny_phantom: Path, tmp_path: Path) -> None:
    trainer = Trainer(_cfg(tiny_phantom, "unet", max_steps=2, log_every=1), tmp_path / "run")
    assert trainer.data.unlabelled is not None  # the data has them; the method does not use them
    assert not trainer.semi_supervised and trainer.unlabelled_stream is None and trainer.discriminator is None
    assert list(trainer.optimisers) == ["supervised"]
    trainer.fit()
    assert set(_records(tmp_path / "run")[-1]) == {"event", "step", "epoch", "lr", "sup_segm", "sup_total"}


def test_unet_adds_cross_entropy_like_sdnet(tiny_phantom: Path, tmp_path: Path) -> None:
    cfg = apply_overrides(_cfg(tiny_phantom, "unet", max_steps=2, log_every=1), ["loss.ce=1"])
    Trainer(cfg, tmp_path / "run").fit()
    record = _records(tmp_path / "run")[-1]
    assert math.isclose(record["sup_total"], 10 * record["sup_segm"] + record["sup_ce"], rel_tol=1e-5)


def test_gan_updates_the_discriminator(tiny_phantom: Path, tmp_path: Path) -> None:
    trainer = Trainer(_cfg(tiny_phantom, "gan", max_steps=4, log_every=1), tmp_path / "run")
    assert trainer.discriminator is not None and trainer.unlabelled_stream is not None
    before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    trainer.fit()
    after = trainer.discriminator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert trainer.optimisers["discriminator"].updates == 4 and trainer.optimisers["unsupervised"].updates == 4
    for record in _records(tmp_path / "run"):
        assert {"sup_segm", "unsup_adv", "disc"} <= set(record)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["discriminator"]


def test_gan_without_adversarial_weight_is_a_unet(tiny_phantom: Path, tmp_path: Path) -> None:
    cfg = apply_overrides(_cfg(tiny_phantom, "gan", max_steps=3), ["loss.adv=0"])
    gan = Trainer(cfg, tmp_path / "gan")
    assert gan.discriminator is None
    gan.fit()
    unet = Trainer(_cfg(tiny_phantom, "unet", max_steps=3), tmp_path / "unet")
    unet.fit()
    _assert_same_parameters(gan.model, unet.model)


def test_selftrain_pseudo_labels_grow_the_training_set(tiny_phantom: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_phantom, "selftrain", max_steps=9, log_every=1)  # stages end after steps 3, 6 and 9
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.data.unlabelled is not None
    n_labelled, n_unlabelled = len(trainer.data.labelled), len(trainer.data.unlabelled)
    assert trainer.train_size == n_labelled and trainer.selftrain_round == 0 and trainer.unlabelled_stream is None
    trainer.fit()
    rounds = _records(tmp_path / "run", "selftrain_round")
    assert [(r["round"], r["step"]) for r in rounds] == [(1, 3), (2, 6)]
    assert rounds[0]["teacher_epoch"] == -1 and rounds[1]["teacher_epoch"] == 1  # current model; best.pt of epoch 1
    for r in rounds:
        assert (r["n_labelled"], r["n_pseudo"], r["n_train"]) == (n_labelled, n_unlabelled, n_labelled + n_unlabelled)
    assert trainer.selftrain_round == 2 and trainer.train_size == n_labelled + n_unlabelled
    assert trainer.pseudo_labels is not None and trainer.pseudo_labels.dtype == torch.uint8
    assert trainer.pseudo_labels.shape == (n_unlabelled, 32, 32)
    assert int(trainer.pseudo_labels.max()) < cfg.model.n_classes
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["selftrain"]["round"] == 2 and torch.equal(state["selftrain"]["pseudo_labels"], trainer.pseudo_labels)


def test_selftrain_round_zero_is_the_unet(tiny_phantom: Path, tmp_path: Path) -> None:
    self_train = Trainer(_cfg(tiny_phantom, "selftrain", max_steps=9), tmp_path / "selftrain")
    unet = Trainer(_cfg(tiny_phantom, "unet", max_steps=3), tmp_path / "unet")
    for _ in range(3):
        assert self_train.train_iteration() == unet.train_iteration()
    _assert_same_parameters(self_train.model, unet.model)


def test_selftrain_early_stopping_ends_a_round_not_the_run(tiny_phantom: Path, tmp_path: Path) -> None:
    # 9 epochs of 4 steps: stage ends 12, 24, 36. With min_delta 1 no epoch improves on the stage's first one, so
    # patience 1 stops every stage at its second epoch end: rounds start at steps 8 and 16, the run ends at 24.
    cfg = _cfg(tiny_phantom, "selftrain", epochs=9, patience=1, min_delta=1.0)
    result = Trainer(cfg, tmp_path / "run").fit()
    rounds = _records(tmp_path / "run", "selftrain_round")
    assert [(r["round"], r["step"]) for r in rounds] == [(1, 8), (2, 16)]
    assert result.stop_reason == "early_stopping" and result.steps == 24 and result.epochs == 6


# ---------------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("method", ["unet", "gan"])
def test_resume_equals_uninterrupted_run(tiny_phantom: Path, tmp_path: Path, method: str) -> None:
    n = 10  # spans two epochs of 4 and a partial one; checkpoint every 3 steps
    straight = Trainer(_cfg(tiny_phantom, method, max_steps=n), tmp_path / "straight")
    straight.fit()
    first = Trainer(_cfg(tiny_phantom, method, max_steps=n // 2), tmp_path / "resumed")
    first.fit()
    del first  # "killed"
    resumed = Trainer.resume(tmp_path / "resumed", overrides=[f"train.max_steps={n}"])
    assert resumed.step == n // 2
    resumed.fit()
    _assert_same_parameters(straight.model, resumed.model)
    if method == "gan":
        assert straight.discriminator is not None and resumed.discriminator is not None
        _assert_same_parameters(straight.discriminator, resumed.discriminator)
    steps_a = [r["step"] for r in _records(tmp_path / "straight")]
    assert steps_a == [r["step"] for r in _records(tmp_path / "resumed")]
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == n


class _Killed(Exception):
    pass


def test_selftrain_resume_mid_round(tiny_phantom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A self-train run killed in round 1 (step 5; rounds start after steps 3 and 6) resumes in round 1 with its
    pseudo-labels and ends with the parameters of an uninterrupted run."""
    cfg = _cfg(tiny_phantom, "selftrain", max_steps=9, checkpoint_every=1, log_every=1)
    straight = Trainer(cfg, tmp_path / "straight")
    straight.fit()
    save = Trainer.save

    def save_then_die(self: Trainer, name: str) -> Path:
        path = save(self, name)
        if name == "last.pt" and self.step == 5:
            raise _Killed
        return path

    monkeypatch.setattr(Trainer, "save", save_then_die)
    with pytest.raises(_Killed):
        Trainer(cfg, tmp_path / "run").fit()
    monkeypatch.undo()
    resumed = Trainer.resume(tmp_path / "run")
    assert resumed.step == 5 and resumed.selftrain_round == 1
    assert resumed.train_size == straight.train_size > len(resumed.data.labelled)
    resumed.fit()
    assert resumed.selftrain_round == 2
    _assert_same_parameters(straight.model, resumed.model)
    assert resumed.pseudo_labels is not None and straight.pseudo_labels is not None
    assert torch.equal(resumed.pseudo_labels, straight.pseudo_labels)
    assert [r["step"] for r in _records(tmp_path / "run")] == list(range(1, 10))
    assert [r["round"] for r in _records(tmp_path / "run", "selftrain_round")] == [1, 2]


def test_resume_with_another_method_is_refused(tiny_phantom: Path, tmp_path: Path) -> None:
    Trainer(_cfg(tiny_phantom, "unet", max_steps=1), tmp_path / "run").fit()
    with pytest.raises(CheckpointError, match="method"):
        Trainer.resume(tmp_path / "run", overrides=["train.method=gan"])


# ---------------------------------------------------------------------------------------------------- SDNet ablations


def test_ablation_without_z_reconstruction(tiny_phantom: Path, tmp_path: Path) -> None:
    cfg = apply_overrides(tiny_config(tiny_phantom, max_steps=3, log_every=1), ["loss.zrec=0"])
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    assert trainer.optimisers["zrec"].updates == 0 and trainer.optimisers["supervised"].updates == 3
    record = _records(tmp_path / "run")[-1]
    assert "sup_zrec" not in record and "unsup_zrec" not in record and {"sup_segm", "unsup_rec", "disc"} <= set(record)


def test_ablation_without_binarisation(tiny_phantom: Path, tmp_path: Path) -> None:
    cfg = apply_overrides(tiny_config(tiny_phantom, max_steps=3), ["model.binarisation=none"])
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    model, _, _ = load_model(tmp_path / "run" / "last.pt")
    assert isinstance(model, SDNet) and model.anatomy_encoder.binarisation == "none"
    image = trainer.data.val[0].image[:2]
    anatomy = model.encode(image, sample=False).anatomy
    assert ((anatomy > 0) & (anatomy < 1)).any()  # soft anatomy factor
    torch.testing.assert_close(anatomy.sum(dim=1), torch.ones_like(anatomy[:, 0]))


def test_ablation_without_adversarial_term(tiny_phantom: Path, tmp_path: Path) -> None:
    cfg = apply_overrides(tiny_config(tiny_phantom, max_steps=3, log_every=1), ["loss.adv=0"])
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.semi_supervised and trainer.discriminator is None and "discriminator" not in trainer.optimisers
    trainer.fit()
    record = _records(tmp_path / "run")[-1]
    assert "disc" not in record and "unsup_adv" not in record and {"unsup_rec", "unsup_kl"} <= set(record)


# ---------------------------------------------------------------------------------------------------- command line


def test_cli_trains_evaluates_and_predicts_a_baseline(
    tiny_phantom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from sdnet.cli import main
    from sdnet.config import to_dict

    cfg = to_dict(tiny_config("", epochs=1, steps_per_epoch=2))
    del cfg["data"]["root"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(tiny_phantom), "--out", str(run),
                 "--no-progress", "--set", "train.method=gan"]) == 0
    assert main(["evaluate", "--checkpoint", str(run), "--figures", "1"]) == 0
    assert "held-out test 3D Dice" in capsys.readouterr().out
    assert (run / "eval_test" / "decomposition.png").is_file()
    image = sorted(tiny_phantom.glob("phantom_000/phantom_000_MR_phase00.nii.gz"))[0]
    assert main(["predict", "--checkpoint", str(run), "--input", str(image), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "phantom_000_MR_phase00_seg.nii.gz").is_file()
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------------- step functions


def test_gan_generator_step_freezes_the_discriminator() -> None:
    from sdnet.config import OptimConfig
    from sdnet.models import build_discriminator, build_segmenter
    from sdnet.training.optim import KerasAdam
    from sdnet.training.steps import gan_generator_step, unet_supervised_step

    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_segmenter(cfg.model, "gan")
    assert isinstance(model, UNetSegmenter)
    disc = build_discriminator(cfg.model)
    opt = KerasAdam(model.parameters(), OptimConfig(lr=1e-2))
    d_before = {k: v.clone() for k, v in disc.state_dict().items()}
    m_before = {k: v.clone() for k, v in model.state_dict().items()}
    image = torch.rand(2, 1, 32, 32) * 2 - 1
    result = gan_generator_step(model, disc, image, opt, cfg.loss)
    assert set(result.losses) == {"adv", "total"} and math.isclose(result.losses["total"], 10 * result.losses["adv"],
                                                                     rel_tol=1e-5)
    assert result.fake_masks is not None and result.fake_masks.shape == (2, 3, 32, 32)
    assert not result.fake_masks.requires_grad
    assert all(p.requires_grad and p.grad is None for p in disc.parameters())  # unfrozen again, never updated
    assert all(torch.equal(v, d_before[k]) for k, v in disc.state_dict().items())
    assert any(not torch.equal(v, m_before[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    masks = torch.randint(0, 4, (2, 32, 32))
    sup = unet_supervised_step(model, image, masks, opt, cfg.loss, n_classes=4)
    assert set(sup.losses) == {"segm", "total"} and 0 <= sup.losses["segm"] <= 1
