"""Starting a training run the way ``sdnet train`` does: the config (file + overrides, or a fine-tuning
checkpoint's split and dataset), a note when the settings are meant for another machine, and the run folder check.

Example::

    config, split = new_run_config("configs/phantom_demo.yaml", ["train.max_steps=100"], data_root="data/phantom")
    Trainer(config, "runs/demo", split=split).fit()
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sdnet.checkpoint import stored_split
from sdnet.config import RunConfig, load_config
from sdnet.data.splits import Split
from sdnet.errors import SDNetError
from sdnet.training.distributed import elastic_restart, launched_by_torchrun

CONFIG_HINT = ("a YAML run config such as configs/phantom_demo.yaml (the demo), configs/acdc_cpu.yaml (ACDC on a "
               "CPU) or configs/acdc_paper.yaml (the paper's sizes), or --config default for the built-in paper-size "
               "model (meant for a GPU)")


def new_run_config(config_path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *,
                   data_root: str | Path | None = None,
                   init_from: str | Path | None = None) -> tuple[RunConfig, Split | None]:
    """The resolved config of a new run and, when fine-tuning, the subject split to keep.

    Args:
        config_path: a YAML config, or ``"default"`` for the built-in paper-size model. ``None`` is refused (a run
            without a config would silently train the paper-size model).
        overrides: ``key=value`` overrides, applied after the file.
        data_root: the dataset folder (``data.root``).
        init_from: fine-tuning: the checkpoint whose split is kept and whose dataset is used unless ``data_root``
            says otherwise.

    Raises:
        SDNetError: no config, or a fine-tuning checkpoint without a usable split; ConfigError for bad keys.
    """
    changes = list(overrides)
    split = None
    if init_from is not None:
        split, root = stored_split(init_from)
        if data_root is None and root:
            changes.insert(0, f"data.root={json.dumps(root)}")
    if data_root is not None:
        changes.append(f"data.root={json.dumps(str(data_root))}")
    if config_path is None:
        raise SDNetError(f"sdnet train needs --config: {CONFIG_HINT}")
    config = load_config(None if str(config_path) == "default" else config_path, changes)
    return config, split


def machine_note(config: RunConfig) -> str | None:
    """A warning when the config is sized for a GPU but set to train on the CPU, else ``None``."""
    mc = config.model
    if config.train.device == "cpu" and mc.unet_filters >= 64 and mc.image_size >= 192:
        return (f"note: training the paper-size model ({mc.image_size} px, {mc.unet_filters} base filters) on the "
                "CPU takes seconds per iteration; configs/acdc_cpu.yaml is sized for CPUs, --set train.device=cuda "
                "uses a GPU")
    return None


def default_run_dir(out: str | Path | None) -> Path:
    """``out``, or ``runs/<date-time>`` when none is given; under torchrun ``--out`` is required (every process must
    name the same folder, and a restart must find it)."""
    if out is not None:
        return Path(out)
    if launched_by_torchrun():
        raise SDNetError("under torchrun, sdnet train needs --out: every process must use the same run folder and "
                         "a restarted one must find its last.pt")
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def restarted_run(run_dir: str | Path | None) -> bool:
    """Whether ``sdnet train --out run_dir`` was restarted by ``torchrun --max-restarts`` after a worker failed and
    should continue from ``run_dir/last.pt`` instead of starting afresh."""
    return run_dir is not None and elastic_restart() and (Path(run_dir) / "last.pt").is_file()


def check_new_run_dir(run_dir: str | Path) -> None:
    """Refuse a folder that already holds a run, before any data is read (the trainer checks again)."""
    if (Path(run_dir) / "last.pt").exists():
        raise SDNetError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
