"""The training log of a run folder: ``log.jsonl`` (one JSON object per logged step and per epoch) and TensorBoard
event files under ``tb/``. In a data-parallel run only rank 0 logs (:class:`NoLogger` elsewhere)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from sdnet.errors import OutputError
from sdnet.outputs import os_reason, write_text


class RunLog:
    """JSONL + TensorBoard writer. On resume, JSONL lines after the checkpoint's step are dropped (they were written
    by the killed process after its last checkpoint and are written again); a fresh start (``resume_step=None``)
    starts an empty log, so a run killed before its first checkpoint and started again logs each step once."""

    def __init__(self, run_dir: Path, *, resume_step: int | None = None) -> None:
        self.path = run_dir / "log.jsonl"
        if resume_step is None:
            write_text(self.path, "")
        elif self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if int(json.loads(line).get("step", 0)) <= resume_step:
                        kept.append(line)
                except (json.JSONDecodeError, ValueError, AttributeError):
                    continue
            write_text(self.path, "".join(k + "\n" for k in kept))
        self._file = self.path.open("a")
        # purge_step: TensorBoard hides events of earlier processes at or after this step (0 on a fresh start)
        self.tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=resume_step or 0)

    def write(self, record: dict[str, Any], prefix: str) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:
            raise OutputError(f"{self.path}: could not be written ({os_reason(exc)})") from None
        step = int(record["step"])
        for key, value in record.items():
            if key not in ("step", "epoch", "event") and isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        self.tb.close()


class NoLogger(RunLog):
    """What the processes other than rank 0 of a data-parallel run log: nothing."""

    def __init__(self) -> None:  # no files
        pass

    def write(self, record: dict[str, Any], prefix: str) -> None:
        return None

    def close(self) -> None:
        return None
