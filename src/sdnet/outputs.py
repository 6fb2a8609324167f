"""Writing outputs so that a failed write never leaves a file that looks finished.

Every result file sdnet writes (masks, checkpoints, ``result.json``, tables, figures, exports) goes through
:func:`atomic_output`: the content is written to a hidden temporary file beside the target (``.tmp-<pid>-<name>``,
same extension, so nibabel and matplotlib still pick the format from the name) and renamed over the target only once
it is complete. A full disk, a file-size limit, a read-only folder or Ctrl-C leaves the previous file (or none) and
no debris. Output folders are checked with :func:`check_writable` before the expensive work starts, so a read-only
``--out`` fails in the first second, not after an hour of training.

OS errors become :class:`~sdnet.errors.OutputError` (one line naming the path and the reason).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sdnet.errors import OutputError

try:
    import resource  # POSIX only
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit, e.g. ulimit -f)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def os_reason(exc: BaseException, path: str | Path | None = None) -> str:
    """A short, human reason for an OS-level write failure. Torch's zip writer reports a failed write without the
    OS error ("unexpected pos 64 vs 0"); then the reason is found from the folder's free space and the process's
    file-size limit."""
    if isinstance(exc, OSError) and exc.errno in _REASONS:
        return _REASONS[exc.errno]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if path is not None:
        try:
            stat = os.statvfs(Path(path).parent)
            if stat.f_bavail * stat.f_frsize < 1 << 20:
                return _REASONS[errno.ENOSPC]
        except OSError:
            pass
        if resource is not None and resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            return _REASONS[errno.EFBIG]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"\[enforce fail at [^]]*\]\s*\.?\s*", "", text)[:160] or "write failed"


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed write: an ``OSError``, or the ``RuntimeError`` torch's zip writer raises on a
    full disk or a file-size limit ("PytorchStreamWriter failed writing file ...")."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, RuntimeError) and any(
        s in str(exc) for s in ("PytorchStreamWriter", "file write failed", "unexpected pos"))


def check_writable(folder: str | Path, *, what: str = "output folder") -> Path:
    """Create ``folder`` (and parents) if needed and prove a file can be written in it.

    Raises:
        OutputError: ``folder`` exists as a file, cannot be created, or is read-only / full.
    """
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: the {what} is a file, not a folder")
    probe = p / f".tmp-{os.getpid()}-write-check"
    try:
        p.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as f:
            f.write(b"sdnet")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise OutputError(f"{p}: cannot write the {what} ({os_reason(exc)})") from None
    finally:
        with suppress(OSError):
            probe.unlink(missing_ok=True)
    return p


_TEMPORARY = re.compile(r"^\.tmp-(\d+)-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files (``.tmp-<pid>-<name>``, see :func:`atomic_output`) that processes no longer
    running left in ``folder`` (not recursive) when they were killed (SIGKILL, a power cut) mid-write.

    Returns:
        The files removed. Those of running processes (this one included) are left alone.
    """
    p = Path(folder)
    removed: list[Path] = []
    if not p.is_dir():
        return removed
    for entry in sorted(p.iterdir()):
        match = _TEMPORARY.match(entry.name)
        if match is None or not entry.is_file():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


def _umask() -> int:
    """The process's umask, read without changing it where the OS tells it (Linux), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_name(path: str | Path) -> Path:
    """The hidden temporary file beside ``path`` that :func:`atomic_output` writes first (unique per process)."""
    p = Path(path)
    return p.with_name(f".tmp-{os.getpid()}-{p.name}")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it is renamed to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was; a failed write (see
    :func:`is_write_failure`) is raised as :class:`~sdnet.errors.OutputError`, anything else as itself. The file
    gets the permissions of a plainly created one (``0o666`` less the umask), whatever mode the writer used (the
    safetensors writer creates its file private, ``0o600``).
    """
    p = Path(path)
    tmp = temporary_name(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if is_write_failure(exc) and not isinstance(exc, OutputError):
            raise OutputError(f"{p}: could not be written ({os_reason(exc, p)}); nothing was left there") from None
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``path`` (see :func:`atomic_output`)."""
    p = Path(path)
    with atomic_output(p) as tmp:
        tmp.write_text(text)
    return p


def save_figure(fig: object, path: str | Path, **kwargs: object) -> Path:
    """Atomically save a matplotlib figure (the format follows ``path``'s extension)."""
    p = Path(path)
    with atomic_output(p) as tmp:
        fig.savefig(tmp, **kwargs)  # type: ignore[attr-defined]
    return p


def existing(paths: list[Path]) -> list[Path]:
    """The entries of ``paths`` that exist (the outputs a command would replace)."""
    return [p for p in paths if p.exists()]


def name_some(paths: list[Path], limit: int = 4) -> str:
    """``a, b, c and 2 more``: a few file names for a one-line message."""
    names = [p.name for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(names) + more


__all__ = ["atomic_output", "check_writable", "existing", "is_write_failure", "name_some", "os_reason",
           "remove_stale_temporaries", "save_figure", "temporary_name", "write_text"]
