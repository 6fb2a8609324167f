"""``python -m benchmarks.distributed``: training throughput with 1 and 2 processes (``torchrun``) on this machine.

The same run — ``configs/phantom_demo.yaml`` (global batch 4) on a 40-subject phantom, ``--iterations``
iterations without validation — is trained by ``sdnet train`` in one process with both cores
(``train.num_threads=2``) and by ``torchrun --nproc_per_node 2 -m sdnet train`` with one core per process
(``train.num_threads=1``, 2 images each). Reported: images per second of training (global batch × iterations /
the trainer's own training time, ``result.json`` ``elapsed_s``, so start-up and data preparation are excluded)
and the ratio. On one 2-core machine both set-ups share one socket and one memory bus: the figure measures the
overhead of the gradient all-reduces and of smaller per-process batches, not cluster scaling.

    python -m benchmarks.distributed [--iterations 60] [--out docs/performance-distributed.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sdnet.outputs import write_text

ROOT = Path(__file__).resolve().parents[1]


def train(processes: int, phantom: Path, out: Path, iterations: int) -> float:
    """Training images per second of one run."""
    threads = max(1, 2 // processes)
    sets = [f"train.max_steps={iterations}", f"train.steps_per_epoch={iterations + 1}", "train.max_minutes=0",
            f"train.num_threads={threads}", f"train.checkpoint_every={iterations + 1}"]
    args = ["train", "--config", str(ROOT / "configs" / "phantom_demo.yaml"), "--data", str(phantom), "--out",
            str(out), "--no-progress", *[x for s in sets for x in ("--set", s)]]
    launcher = ([sys.executable, "-m", "sdnet"] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                 "-m", "sdnet"])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*launcher, *args], check=True, capture_output=True, env=env)
    result = json.loads((out / "result.json").read_text())
    return 4 * iterations / float(result["elapsed_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--out", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        phantom = Path(tmp) / "phantom"
        subprocess.run([sys.executable, "-m", "sdnet", "phantom", "--out", str(phantom), "--subjects", "40",
                        "--size", "96", "--seed", "0"], check=True, capture_output=True)
        one = train(1, phantom, Path(tmp) / "one", args.iterations)
        two = train(2, phantom, Path(tmp) / "two", args.iterations)
    rows = ["| set-up | training images/s | vs 1 process |", "|---|---|---|",
            f"| 1 process, 2 threads, batch 4 | {one:.1f} | 1.00× |",
            f"| 2 processes (torchrun, gloo), 1 thread each, 2 images each | {two:.1f} | {two / one:.2f}× |"]
    text = "\n".join(rows)
    print(text)
    if args.out:
        write_text(args.out, "# Data-parallel training on one machine\n\n"
                   f"`python -m benchmarks.distributed --iterations {args.iterations} --out {args.out}`: "
                   f"`configs/phantom_demo.yaml` (global batch 4), {args.iterations} iterations, on this 2-core "
                   "machine. Both set-ups share one socket: this shows the overhead of the per-update gradient "
                   "all-reduce and of half-size per-process batches, not how a cluster scales.\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
