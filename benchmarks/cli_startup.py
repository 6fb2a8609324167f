"""``python -m benchmarks.cli_startup``: how long ``sdnet --help`` takes, against importing torch.

Each command runs in a fresh interpreter (``subprocess``), ``--repeats`` times after one warm-up run (so the file
cache is warm, as on a machine in use); the median wall time is reported. ``sdnet --help`` loads only the argument
parser (:mod:`sdnet.cli.parser`), not torch or the library: the row for ``python -c "import torch"`` shows what it
would cost otherwise. ``sdnet train --help`` (a sub-command's help) is measured as well.

    python -m benchmarks.cli_startup [--repeats 10] [--out docs/performance-cli.md]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sdnet.outputs import write_text


def median_seconds(command: list[str], repeats: int) -> float:
    subprocess.run(command, capture_output=True, check=True)  # warm-up: file cache, .pyc files
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    exe = shutil.which("sdnet") or str(Path(sys.executable).parent / "sdnet")
    rows = [
        ("`sdnet --help`", [exe, "--help"]),
        ("`sdnet train --help`", [exe, "train", "--help"]),
        ("`python -c 'import sdnet'`", [sys.executable, "-c", "import sdnet"]),
        ("`python -c 'import torch'` (for scale)", [sys.executable, "-c", "import torch"]),
    ]
    results = [(label, median_seconds(cmd, args.repeats)) for label, cmd in rows]
    torch_s = results[-1][1]
    lines = ["| command | median wall time (s) | vs importing torch |", "|---|---|---|"]
    lines += [f"| {label} | {sec:.3f} | {sec / torch_s:.2f}× |" for label, sec in results]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, "# Start-up time of the command line\n\n"
                   f"`python -m benchmarks.cli_startup --repeats {args.repeats} --out {args.out}` (median of "
                   f"{args.repeats} runs after a warm-up, each a fresh interpreter; this machine: "
                   "2 CPU cores).\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
