import dataclasses

import pytest

from sdnet.config import ConfigError, RunConfig, apply_overrides, load_config, save_config


def test_defaults_are_the_papers():
    c = RunConfig()
    assert (c.loss.kl, c.loss.segm, c.loss.adv, c.loss.rec, c.loss.zrec) == (0.01, 10, 10, 1, 1)
    assert (c.optim.lr, c.optim.beta1, c.optim.decay, c.train.batch_size) == (1e-4, 0.5, 1e-4, 4)
    assert (c.model.anatomy_channels, c.model.n_z, c.model.unet_filters, c.model.image_size) == (8, 8, 64, 224)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().train.batch_size = 3  # type: ignore[misc]


def test_overrides_and_roundtrip(tmp_path):
    c = apply_overrides(RunConfig(), ["optim.lr=2e-4", "model.binarisation=round", "data.use_unlabelled=false"])
    assert c.optim.lr == 2e-4 and c.model.binarisation == "round" and c.data.use_unlabelled is False
    save_config(c, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == c


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.nope=1", "train.nope"),
        ("nosection.lr=1", "nosection"),
        ("train.batch_size=abc", "train.batch_size"),
        ("model.binarisation=maybe", "model.binarisation"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.image_size=100", "model.image_size"),
    ],
)
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(RunConfig(), [override])


def test_bad_yaml_key_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"train\.batch_sise"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_non_finite_numbers_are_refused_at_load():
    from sdnet.config import ConfigError, RunConfig, apply_overrides

    for item in ("optim.lr=nan", "optim.lr=inf", "loss.kl=nan", "train.max_minutes=nan", "loss.segm=-inf"):
        with pytest.raises(ConfigError, match="must be a finite number"):
            apply_overrides(RunConfig(), [item])


@pytest.mark.parametrize("value,expected", [("", ()), ("2000", (2000,)), ("4000, 2000", (2000, 4000))])
def test_snapshot_steps_parse(value: str, expected: tuple[int, ...]):
    assert load_config(None, [f'train.snapshot_steps="{value}"']).train.snapshots() == expected


@pytest.mark.parametrize("value", ["0", "-5", "2000,2000", "2k", "1.5"])
def test_snapshot_steps_refuse_bad_values(value: str):
    with pytest.raises(ConfigError, match=r"train\.snapshot_steps"):
        load_config(None, [f'train.snapshot_steps="{value}"'])


@pytest.mark.parametrize("overrides,message", [
    (["train.method=selftrain"], "rounds divide its budget"),
    (["train.max_steps=1500"], "beyond train.max_steps=1500"),
    (["train.steps_per_epoch=2500"], "before the first validation"),
])
def test_snapshot_steps_refused_where_no_shorter_run_matches(overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ['train.snapshot_steps="2000"', *overrides])
    load_config(None, overrides)  # fine without snapshots
