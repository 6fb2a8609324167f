"""One writer per run folder: a PID lock file taken for the life of a training run."""

from __future__ import annotations

import os
from pathlib import Path

from sdnet.errors import OutputError, SDNetError
from sdnet.outputs import os_reason


class RunLock:
    """One writer per run folder: ``<run>/.lock`` holds the owner's PID for the life of the run.

    A lock whose process no longer exists (a killed run) is stale and taken over; a live one is refused with a
    :class:`~sdnet.errors.SDNetError` naming the folder and the PID.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> RunLock:
        for _ in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise SDNetError(f"{self.path.parent}: another sdnet process (PID {pid}) is writing this run "
                                     "folder; wait for it or use another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as exc:
                raise OutputError(f"{self.path.parent}: cannot write the run folder ({os_reason(exc)})") from None
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(str(os.getpid()))
            except OSError as exc:
                self.path.unlink(missing_ok=True)
                raise OutputError(f"{self.path.parent}: cannot write the run folder ({os_reason(exc)})") from None
            self.held = True
            return self
        raise SDNetError(f"{self.path}: could not take the run folder's lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
