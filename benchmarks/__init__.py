"""SDNet benchmark suite (issue "Performance: a benchmark suite"): ``python -m benchmarks`` / ``make bench``.

Modules:

* :mod:`benchmarks.setups` — the benchmarked configurations (paper, CPU, and tiny ``--quick`` versions),
  synthetic data and a :class:`~sdnet.training.Trainer` built on it;
* :mod:`benchmarks.eager` — the deliberately simple eager port of one training iteration (the baseline);
* :mod:`benchmarks.cases` — one measurement per case, each run in a fresh process (``python -m benchmarks.cases``);
* :mod:`benchmarks.report` — the Markdown table and ``docs/performance.md``;
* :mod:`benchmarks.quality` — validation Dice after a fixed number of steps, eager vs library;
* :mod:`benchmarks.cli` — the command line.

Speed is measured here, never asserted in unit tests (DESIGN.md §9).
"""
