"""Exceptions the CLI turns into one-line error messages (never a traceback).

Every error raised for bad *user input* (a path, a file's contents, a config key, a checkpoint) derives from
:class:`SDNetError` and carries a message that names the offending file or key.
"""

from __future__ import annotations


class SDNetError(Exception):
    """Base class of user-facing errors."""


class DataError(SDNetError):
    """A dataset file or folder is missing, unreadable or has invalid contents."""


class CheckpointError(SDNetError):
    """A checkpoint is missing, corrupt, or contains something other than plain tensors and values."""


class AnalysisError(SDNetError, ValueError):
    """An analysis of the factors cannot run on the given model or data (also a ``ValueError``)."""


class OutputError(SDNetError):
    """An output file or folder cannot be written (read-only folder, full disk, file-size limit, permissions)."""


class RunInterrupted(SDNetError):
    """A command was stopped by Ctrl-C (SIGINT) or SIGTERM after saving what it had finished (training: ``last.pt``,
    ``--resume`` continues; predict: the scans done so far). ``exit_status`` is the CLI's exit status (130 unless
    the command asks for the signal's own, 128 + its number)."""

    def __init__(self, message: str, *, exit_status: int = 130) -> None:
        super().__init__(message)
        self.exit_status = exit_status
