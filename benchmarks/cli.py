"""``python -m benchmarks``: plan the cases, run each in a fresh process, print the table, write the document.

Sections (``--sections``, comma-separated; default all but ``quality``):

* ``reference`` — float32 matmul 2048² and a 3×3 convolution 64→64 on 4×112² (forward; forward + backward);
* ``train`` — one training iteration, eager baseline vs library, at the ``cpu`` and ``paper`` configurations, each
  in its own process (peak memory, FLOPs), and both alternated in one process (``interleaved``: the speed-up that a
  shared machine's drifting speed disturbs least; the paper configuration's is optional);
* ``encoder`` — the anatomy encoder's forward + backward alone (fraction of the measured convolution rate);
* ``inference`` — ``SDNet.segment`` and ``SDNet.encode``: eval + no_grad vs inference_mode, channels_last, folded
  BatchNorm, torch.compile;
* ``levers`` — the library iteration with one lever changed (optional: skipped when the time budget is short);
* ``quality`` — validation Dice after a fixed number of iterations, eager vs library (not run by default).

The default run is sized for under 10 minutes on 2 idle cores (the paper configuration's eager iteration alone
takes tens of seconds): required cases run first, and optional ones (marked in the printed plan) are skipped when
they would end the run after ``--max-minutes`` (default 9). ``--quick`` runs every section at tiny sizes in a few
minutes, most of it torch.compile's first compilation (a smoke test, not numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.cases import (
    INFERENCE_VARIANTS,
    INTERLEAVED,
    LEVER_VARIANTS,
    RESULT_PREFIX,
    TRAIN_VARIANTS,
    CaseResult,
    CaseSpec,
    run_case,
)
from benchmarks.report import Report, machine_info, markdown_document, tables
from benchmarks.setups import CONFIG_NAMES, REPO_ROOT

SECTION_NAMES: tuple[str, ...] = ("reference", "train", "encoder", "inference", "levers", "quality")
DEFAULT_SECTIONS: tuple[str, ...] = ("reference", "train", "encoder", "inference", "levers")
DEFAULT_OUT = REPO_ROOT / "docs" / "performance.md"
CASE_TIMEOUT_S = 900.0


def _timing(section: str, config: str, quick: bool) -> dict[str, float]:
    """Warm-up calls, repetition bounds and timed budget (s) of a case; sized for ~10 min in all on 2 cores."""
    if quick:
        return {"warmup": 1, "min_reps": 2, "max_reps": 3, "budget_s": 0.2}
    if section == "reference":
        return {"warmup": 3, "min_reps": 5, "max_reps": 20, "budget_s": 3.0}
    heavy = config == "paper"
    if section == "interleaved":  # pairs of iterations (eager + library) within the budget
        return ({"warmup": 1, "min_reps": 2, "max_reps": 4, "budget_s": 120.0} if heavy
                else {"warmup": 1, "min_reps": 5, "max_reps": 12, "budget_s": 25.0})
    if section in ("train", "levers"):
        # paper: ~35-50 s per iteration on 2 cores, so two timed repetitions keep the whole run within 10 minutes
        return ({"warmup": 1, "min_reps": 2, "max_reps": 5, "budget_s": 60.0} if heavy
                else {"warmup": 2, "min_reps": 5, "max_reps": 15, "budget_s": 15.0})
    if section == "encoder":
        return ({"warmup": 1, "min_reps": 3, "max_reps": 5, "budget_s": 25.0} if heavy
                else {"warmup": 2, "min_reps": 5, "max_reps": 15, "budget_s": 5.0})
    return ({"warmup": 1, "min_reps": 3, "max_reps": 5, "budget_s": 8.0} if heavy
            else {"warmup": 2, "min_reps": 5, "max_reps": 20, "budget_s": 3.0})


def plan(
    sections: Sequence[str], configs: Sequence[str], *, quick: bool, threads: int, timer: str = "wall"
) -> list[tuple[CaseSpec, bool]]:
    """The cases to run, in order, each with whether it is optional (skipped when the budget is short).

    Required cases come first; optional ones follow in decreasing importance: torch.compile, the paper
    configuration's other inference variants, the training levers, the encoder in channels_last, the encoder at
    the CPU configuration.
    """
    cases: list[tuple[int, CaseSpec]] = []  # (rank: 0 = required, higher = optional and later)

    def add(section: str, config: str, variant: str, *, rank: int = 0, batch: int = 0,
            functions: str = "segment,encode") -> None:
        t = _timing("interleaved" if variant == INTERLEAVED else section, config, quick)
        spec = CaseSpec(section=section, config=config, variant=variant, quick=quick, threads=threads,
                        warmup=int(t["warmup"]), min_reps=int(t["min_reps"]), max_reps=int(t["max_reps"]),
                        budget_s=t["budget_s"], batch=batch, timer=timer, functions=functions)
        cases.append((rank, spec))

    if "reference" in sections:
        add("reference", "machine", "fp32")
    if "train" in sections:
        for config in configs:
            for variant in TRAIN_VARIANTS:
                add("train", config, variant)
        for config in configs:  # the CPU configuration's is the acceptance number; the paper one is long (optional)
            add("train", config, INTERLEAVED, rank=6 if config == "paper" else 0)
    if "encoder" in sections:
        for config in configs:  # the paper configuration's is the acceptance number; the others are optional
            add("encoder", config, "nchw", rank=5 if config != "paper" and "paper" in configs else 0)
    if "inference" in sections:
        for config in configs:
            paper = config == "paper"
            batch = 4 if paper or quick else 16
            functions = "segment" if paper else "segment,encode"  # at 224 px encode costs what segment does
            variants = ("simple", "channels-last", "fold-bn") if paper else INFERENCE_VARIANTS
            for variant in variants:
                rank = 1 if variant == "compile" else 2 if paper and variant != "simple" else 0
                add("inference", config, variant, batch=batch, functions=functions, rank=rank)
    if "levers" in sections:
        for variant in LEVER_VARIANTS:
            add("levers", configs[0], variant, rank=3)
        for config in configs:
            add("encoder", config, "channels-last", rank=4)
    ordered = sorted(cases, key=lambda case: case[0])  # stable: plan order within a rank
    return [(spec, rank > 0) for rank, spec in ordered]


def run_in_subprocess(spec: CaseSpec, *, timeout_s: float = CASE_TIMEOUT_S) -> CaseResult:
    """Run one case in a fresh interpreter (its own peak RSS) and parse its ``RESULT`` line."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads),
                "TORCHINDUCTOR_COMPILE_THREADS": "1"})
    command = [sys.executable, "-m", "benchmarks.cases", spec.to_json()]
    with tempfile.TemporaryDirectory(prefix="sdnet-bench-inductor-") as cache:
        # torch.compile: an empty inductor cache, so that "compile s" is a first compilation, as on a fresh clone
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return CaseResult(spec=json.loads(spec.to_json()), error=f"timed out after {timeout_s:.0f} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return CaseResult.from_json(line[len(RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return CaseResult(spec=json.loads(spec.to_json()), error=f"exit status {proc.returncode}: {tail}")


def _estimate(spec: CaseSpec, done: Sequence[CaseResult]) -> float:
    """Expected wall time of an optional case: that of the closest case already run (same kind and config)."""
    kind = "train" if spec.section == "levers" else spec.section
    # inductor's first compilation (both inference functions, or the four networks' forward and backward)
    extra = 120.0 if spec.variant in ("compile", "library+compile") else 0.0
    # a lever alternates with the plain library iteration (twice the work); bf16 without native bf16 instructions
    # is ~20-30x slower per iteration, so only the minimum repetitions run
    factor = 16.0 if spec.variant == "library+bf16" else 2.0 if spec.section == "levers" else 1.0
    for r in done:
        s = r.spec
        if s["section"] == kind and s["config"] == spec.config:
            return r.wall_s * factor + 5.0 + extra
    return spec.budget_s * 3 + 10.0 + extra


def _summary(result: CaseResult) -> str:
    if result.error:
        return f"FAILED: {result.error}"
    parts = []
    for name, m in result.measurements.items():
        parts.append(f"{name} {m.median_s * 1e3:.1f} ms (median of {len(m.times_s)})")
    return "; ".join(parts) or "no measurements"


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of every code path")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTION_NAMES)} (default: all but quality)")
    parser.add_argument("--configs", default=",".join(CONFIG_NAMES),
                        help="comma-separated subset of cpu,paper (default: both)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all usable CPUs)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="skip optional cases that would end the run after this many minutes (default 9; "
                        "no limit with --quick)")
    parser.add_argument("--out", default=None,
                        help="Markdown output (default: docs/performance.md, none with --quick; '-' for none)")
    parser.add_argument("--timer", choices=("wall", "process"), default="wall",
                        help="wall clock (default) or the process's CPU time (with --threads 1: comparisons on a "
                        "busy machine)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--in-process", action="store_true",
                        help="run the cases in this process (faster start-up; no per-case peak memory)")
    parser.add_argument("--quality-steps", type=int, default=0,
                        help="iterations of the quality check (default 300, 3 with --quick)")
    parser.add_argument("--quality-seeds", default="0", help="comma-separated seeds of the quality check")
    parser.add_argument("--quality-precision", choices=("fp32", "bf16"), default="fp32",
                        help="train.precision of the library in the quality check (the eager baseline is fp32): "
                             "bf16 checks that mixed precision keeps accuracy")
    args = parser.parse_args(list(argv))
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for s in args.sections:
        if s not in SECTION_NAMES:
            parser.error(f"unknown section {s!r}; choose from {', '.join(SECTION_NAMES)}")
    for c in args.configs:
        if c not in CONFIG_NAMES:
            parser.error(f"unknown config {c!r}; choose from {', '.join(CONFIG_NAMES)}")
    if not args.configs:
        parser.error("--configs is empty")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    start = time.perf_counter()
    threads = max(1, args.threads or _usable_cpus())
    torch.set_num_threads(threads)
    command = " ".join(["python -m benchmarks", *(shlex.quote(a) for a in argv)])
    report = Report(command=command, machine=machine_info(threads), quick=args.quick)
    report.machine["timer"] = args.timer
    cases = plan(args.sections, args.configs, quick=args.quick, threads=threads, timer=args.timer)
    max_minutes = args.max_minutes if args.max_minutes is not None else (math.inf if args.quick else 9.0)
    limit_s = 60.0 * max_minutes

    print(f"# {command}")
    print(f"# {report.machine['cpu']}, {threads} thread(s), torch {report.machine['torch']}, {args.timer} time"
          f"{' — QUICK smoke test, tiny sizes' if args.quick else ''}")
    print(f"# plan ({len(cases)} cases, each in a {'shared' if args.in_process else 'fresh'} process; "
          f"budget {max_minutes:g} min, optional cases skipped when it is short):")
    for spec, optional in cases:
        print(f"#   {spec.name:40s} warm-up {spec.warmup}, reps {spec.min_reps}-{spec.max_reps} within "
              f"{spec.budget_s:g} s{'  (optional)' if optional else ''}")
    if "quality" in args.sections:
        print("#   quality: eager vs library validation Dice on the phantom (a few minutes)")
    sys.stdout.flush()
    if args.dry_run:
        return 0

    for spec, optional in cases:
        elapsed = time.perf_counter() - start
        if optional and elapsed + _estimate(spec, report.results) > limit_s:
            report.skipped.append(spec.name)
            print(f"[{elapsed:6.0f} s] {spec.name}: skipped (would exceed {max_minutes:g} min)", flush=True)
            continue
        if args.in_process:
            result = run_case(spec)
            result.peak_rss_mb = result.setup_rss_mb = None
        else:
            result = run_in_subprocess(spec)
        report.results.append(result)
        print(f"[{time.perf_counter() - start:6.0f} s] {spec.name} ({result.wall_s:.0f} s): {_summary(result)}",
              flush=True)

    if "quality" in args.sections:
        from benchmarks.quality import run_quality

        steps = args.quality_steps or (3 if args.quick else 300)
        seeds = [int(s) for s in args.quality_seeds.split(",") if s.strip()]
        print(f"[{time.perf_counter() - start:6.0f} s] quality: {steps} iterations x {len(seeds)} seed(s) ...",
              flush=True)
        report.quality = run_quality(steps=steps, seeds=seeds, threads=threads, quick=args.quick,
                                     precision=args.quality_precision)
        print(f"[{time.perf_counter() - start:6.0f} s] quality done ({report.quality.wall_s:.0f} s)", flush=True)

    report.elapsed_s = time.perf_counter() - start
    report.machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print("\n".join(tables(report)))
    print(f"Total wall time: {report.elapsed_s:.0f} s")
    out = args.out if args.out is not None else (None if args.quick else str(DEFAULT_OUT))
    if out and out != "-":
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown_document(report))
        print(f"Wrote {path}")
    failed = [r for r in report.results if r.error and r.spec["variant"] != "compile"]
    return 1 if failed else 0
