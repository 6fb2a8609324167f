"""The ``sdnet`` command line: ``phantom``, ``train``, ``evaluate``, ``predict``, ``indices``, ``export``,
``experiment``, ``analyse``.

:mod:`sdnet.cli.parser` defines the arguments, :mod:`sdnet.cli.commands` turns each command's arguments into one
library call. Errors caused by the user's input (paths, files, config keys, checkpoints) are printed as one line
``sdnet: error: ...`` with exit status 2; an interrupted run exits with 130.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from sdnet.cli.parser import build_parser
from sdnet.errors import RunInterrupted, SDNetError
from sdnet.outputs import os_reason

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as typed (for --slurm's job script)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    # The commands module imports torch and the library; it is loaded only once the arguments parsed, so that
    # `sdnet --help` (and a mistyped option) answers at once. This is for start-up time, not an import circle.
    commands = importlib.import_module("sdnet.cli.commands")
    try:
        return int(commands.COMMANDS[args.command](args))
    except RunInterrupted as exc:
        print(f"sdnet: stopped: {exc}", file=sys.stderr)
        return exc.exit_status
    except SDNetError as exc:
        print(f"sdnet: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write or read the library did not foresee: still one line, naming the file
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"sdnet: error: {where}{os_reason(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdnet: interrupted", file=sys.stderr)
        return 130
