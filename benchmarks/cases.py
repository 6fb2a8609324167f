"""One benchmark case per process: ``python -m benchmarks.cases '<CaseSpec as JSON>'``.

Each case is measured in a fresh interpreter so that its peak resident memory (``ru_maxrss``) is its own; the
result is printed as one ``RESULT {json}`` line. Timing: ``warmup`` untimed calls (the first one, where asked,
under :class:`torch.utils.flop_counter.FlopCounterMode` to count the FLOPs of one call), then
``reps`` = clamp(budget / last warm-up time, min_reps, max_reps) timed calls; the report uses their median.

FLOPs are what ``FlopCounterMode`` counts: convolutions (forward and backward), matrix products and attention —
the arithmetic that matters here; element-wise work (BatchNorm, activations, losses, Adam) is not counted.
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.eager import EagerSDNet
from benchmarks.setups import IterationBatches, build_trainer, run_config, sdnet_model, synthetic_slices
from sdnet.models import SDNet, build_sdnet, fold_batch_norm
from sdnet.training import Trainer
from sdnet.training.optim import AdamImplementation, KerasAdam

RESULT_PREFIX = "RESULT "

TRAIN_VARIANTS: tuple[str, ...] = ("eager", "library")
"""Training versions compared by the acceptance criteria."""

INTERLEAVED = "interleaved"
"""Training variant that times the eager and the library iteration alternately in one process (E, L, E, L, …), so
that a shared machine's slow minutes hit both alike; its speed-up is the median of the per-pair ratios."""

LEVER_VARIANTS: tuple[str, ...] = (
    "library+loop-adam", "library+channels-last", "library+flush-denormal", "library+no-onednn", "library+compile",
    "library+bf16",
)
"""Library iteration with one lever changed (``loop-adam`` = torch's per-parameter Adam, i.e. the library before
the fused-Adam change; ``no-onednn`` = ATen's own convolutions instead of oneDNN's; ``compile`` = torch.compile of
the four SDNet networks; ``bf16`` = ``train.precision=bf16``, the library's mixed precision)."""

INFERENCE_VARIANTS: tuple[str, ...] = ("simple", "inference-mode", "channels-last", "fold-bn", "compile")
"""``simple``: eval + no_grad; ``inference-mode``: torch.inference_mode; ``channels-last``: + channels_last
weights and input; ``fold-bn``: + BatchNorm folded into the preceding convolutions; ``compile``: torch.compile
of the inference-mode function (compile time reported separately; falls back cleanly if compilation fails)."""


@dataclass(frozen=True)
class CaseSpec:
    """What one case measures.

    Attributes:
        section: ``reference``, ``train``, ``encoder``, ``inference`` or ``levers``.
        config: ``cpu`` or ``paper`` (``machine`` for the reference).
        variant: see :data:`TRAIN_VARIANTS`, :data:`LEVER_VARIANTS`, :data:`INFERENCE_VARIANTS`; the encoder
            case takes ``nchw`` or ``channels-last``.
        quick: tiny sizes (smoke test).
        threads: torch intra-op threads.
        warmup: untimed calls before timing (the first counts FLOPs where relevant).
        min_reps, max_reps, budget_s: timed calls: clamp(budget_s / last warm-up time, min_reps, max_reps).
        batch: images per call for inference and the encoder (0 = the config's training batch).
        functions: inference only: which of ``segment``, ``encode`` to measure (comma-separated).
        timer: ``wall`` (``time.perf_counter``, the default) or ``process`` (``time.process_time``: CPU time of
            all threads of the process — with one thread, a way to compare versions on a busy shared machine).
    """

    section: str
    config: str
    variant: str
    quick: bool = False
    threads: int = 1
    warmup: int = 1
    min_reps: int = 3
    max_reps: int = 10
    budget_s: float = 10.0
    batch: int = 0
    timer: str = "wall"
    functions: str = "segment,encode"

    @property
    def name(self) -> str:
        return f"{self.section}/{self.config}/{self.variant}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CaseSpec:
        return cls(**json.loads(text))


@dataclass
class Measurement:
    """Timed calls of one function: warm-up and timed wall times (s), FLOPs and items (images) per call."""

    times_s: list[float]
    warmup_s: list[float]
    flops: float | None = None
    items: int = 1

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s) if self.times_s else float("nan")


@dataclass
class CaseResult:
    """What a case reports: its measurements by name, peak RSS (MB) after setup and at the end, extra values."""

    spec: dict[str, Any]
    measurements: dict[str, Measurement] = field(default_factory=dict)
    setup_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CaseResult:
        data = json.loads(text)
        data["measurements"] = {k: Measurement(**v) for k, v in data["measurements"].items()}
        return cls(**data)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def channels_last(module: nn.Module) -> None:
    """Convert ``module``'s 4-D parameters and buffers to the channels_last memory format, in place (the same
    ``Parameter`` objects, so optimisers keep working)."""
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def measure(
    fn: Callable[[int], object], spec: CaseSpec, *, count_flops: bool = True, items: int = 1,
    warmup: int | None = None,
) -> Measurement:
    """Time ``fn(call_index)``: warm-up calls (the first under ``FlopCounterMode`` if ``count_flops``), then a
    budget-driven number of timed calls (see the module docstring)."""
    return measure_alternately({"fn": fn}, spec, items=items, count_flops="fn" if count_flops else None,
                               warmup=warmup)["fn"]


def measure_alternately(
    steps: dict[str, Callable[[int], object]], spec: CaseSpec, *, items: int = 1, count_flops: str | None = None,
    warmup: int | None = None,
) -> dict[str, Measurement]:
    """Time several step functions in turn (A, B, A, B, …) so that a shared machine's drift hits all alike.

    ``warmup`` (default ``spec.warmup``) untimed rounds come first, at least one when ``count_flops`` names a step
    (its first call runs under ``FlopCounterMode``); then clamp(budget / time of the last warm round, min_reps,
    max_reps) timed rounds. With one step this is :func:`measure`.
    """
    clock = time.process_time if spec.timer == "process" else time.perf_counter
    n_warm = spec.warmup if warmup is None else warmup
    warm: dict[str, list[float]] = {name: [] for name in steps}
    times: dict[str, list[float]] = {name: [] for name in steps}
    flops: dict[str, float] = {}
    call = 0
    for i in range(max(n_warm, 1 if count_flops is not None else 0)):
        for name, fn in steps.items():
            start = clock()
            if i == 0 and name == count_flops:
                with FlopCounterMode(display=False) as counter:
                    fn(call)
                flops[name] = float(counter.get_total_flops())
            else:
                fn(call)
            warm[name].append(clock() - start)
        call += 1
    per_round = sum(w[-1] for w in warm.values() if w)
    rounds = spec.max_reps if per_round <= 0 else int(spec.budget_s / per_round)
    rounds = max(spec.min_reps, min(spec.max_reps, rounds))
    for _ in range(rounds):
        for name, fn in steps.items():
            start = clock()
            fn(call)
            times[name].append(clock() - start)
        call += 1
    return {name: Measurement(times_s=times[name], warmup_s=warm[name], flops=flops.get(name), items=items)
            for name in steps}


# ---------------------------------------------------------------------------------------------------- reference
def _reference(spec: CaseSpec, result: CaseResult) -> None:
    """float32 matmul n×n and a 3×3 convolution 64→64 on 4×112² (forward, and forward + backward)."""
    n = 256 if spec.quick else 2048
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    result.measurements["matmul"] = measure(lambda _: a @ b, spec)
    batch, channels, size = (4, 16, 28) if spec.quick else (4, 64, 112)
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    x = torch.randn(batch, channels, size, size, generator=gen)

    def forward(_: int) -> None:
        with torch.no_grad():
            conv(x)

    xg = x.clone().requires_grad_(True)
    grad = torch.randn(batch, channels, size, size, generator=gen)

    def forward_backward(_: int) -> None:
        conv.zero_grad(set_to_none=True)
        xg.grad = None
        conv(xg).backward(grad)

    result.measurements["conv_fwd"] = measure(forward, spec, items=batch)
    result.measurements["conv_fwd_bwd"] = measure(forward_backward, spec, items=batch)
    result.extra["matmul_n"] = n
    result.extra["conv_shape"] = f"{batch}x{channels}x{size}x{size}, {channels}->{channels}, 3x3"


# ---------------------------------------------------------------------------------------------------- training
def _replace_optimisers(trainer: Trainer, implementation: AdamImplementation) -> None:
    """Swap every :class:`KerasAdam` of ``trainer`` for one with the given kernel (same parameters, fresh state)."""
    for name, opt in list(trainer.optimisers.items()):
        params = [p for group in opt.optimizer.param_groups for p in group["params"]]
        trainer.optimisers[name] = KerasAdam(params, opt.config, implementation=implementation)


def _train_interleaved(spec: CaseSpec, result: CaseResult) -> None:
    """Eager and library iterations alternately, each version on its own trainer built from the same seed."""
    config = run_config(spec.config, quick=spec.quick, threads=spec.threads)
    with tempfile.TemporaryDirectory() as tmp:
        library = build_trainer(config, Path(tmp) / "library")
        baseline = build_trainer(config, Path(tmp) / "eager", data=library.data)
        batches = IterationBatches(baseline)
        eager = EagerSDNet.create(sdnet_model(baseline), baseline.discriminator, config)
        items = config.train.batch_size * (2 if library.unlabelled_stream is not None else 1)
        result.setup_rss_mb = peak_rss_mb()
        result.measurements.update(measure_alternately(
            {"eager": lambda i: eager.iteration(batches.batch(i)), "library": lambda i: library.train_iteration()},
            spec, items=items))
    e, lib = result.measurements["eager"].times_s, result.measurements["library"].times_s
    result.extra["pair_ratios"] = [a / b for a, b in zip(e, lib, strict=True)]


def _train(spec: CaseSpec, result: CaseResult) -> None:
    """One training version alone (section ``train``), or a lever alternated with the plain library iteration
    (section ``levers``: the lever's ``iteration`` plus ``library`` times, and their per-round ratios)."""
    if spec.variant == INTERLEAVED:
        _train_interleaved(spec, result)
        return
    extra = ("train.precision=bf16",) if spec.variant == "library+bf16" else ()
    config = run_config(spec.config, quick=spec.quick, threads=spec.threads, extra=extra)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(config, Path(tmp) / "run")
        items = config.train.batch_size * (2 if trainer.unlabelled_stream is not None else 1)
        step: Callable[[int], object]
        if spec.variant == "eager":
            batches = IterationBatches(trainer)
            eager = EagerSDNet.create(sdnet_model(trainer), trainer.discriminator, config)
            step = lambda i: eager.iteration(batches.batch(i))  # noqa: E731
        else:
            flush_denormal, onednn = False, True
            if spec.variant == "library+loop-adam":
                _replace_optimisers(trainer, "loop")
            elif spec.variant == "library+channels-last":
                channels_last(trainer.model)
                if trainer.discriminator is not None:
                    channels_last(trainer.discriminator)
            elif spec.variant == "library+flush-denormal":
                result.extra["flush_denormal_supported"] = bool(torch.set_flush_denormal(True))
                flush_denormal = True
            elif spec.variant == "library+no-onednn":
                onednn = False
            elif spec.variant == "library+compile":
                model = sdnet_model(trainer)
                for name in ("anatomy_encoder", "segmentor", "decoder", "modality_encoder"):
                    setattr(model, name, torch.compile(getattr(model, name)))
            elif spec.variant not in ("library", "library+bf16"):  # bf16: set in the config above
                raise ValueError(f"unknown training variant {spec.variant!r}")
            result.extra["adam"] = sorted({opt.implementation for opt in trainer.optimisers.values()})

            def step(i: int) -> object:
                if flush_denormal:  # a per-thread flag: set for the lever's calls only
                    torch.set_flush_denormal(True)
                # process-wide flag, restored after the call (only entered for the lever: it warns about TF32)
                with torch.backends.mkldnn.flags(enabled=False) if not onednn else contextlib.nullcontext():
                    return trainer.train_iteration()

        result.setup_rss_mb = peak_rss_mb()
        if spec.section == "levers":
            plain = build_trainer(run_config(spec.config, quick=spec.quick, threads=spec.threads), Path(tmp) / "plain")

            def plain_step(i: int) -> object:
                torch.set_flush_denormal(False)
                return plain.train_iteration()

            both = measure_alternately({"iteration": step, "library": plain_step}, spec, items=items,
                              count_flops="iteration")
            result.measurements.update(both)
            result.extra["ratios_vs_library"] = [
                lib / t for t, lib in zip(both["iteration"].times_s, both["library"].times_s, strict=True)]
        else:
            result.measurements["iteration"] = measure(step, spec, items=items)
        result.extra["batch_size"] = config.train.batch_size
        result.extra["parameters"] = sum(p.numel() for p in trainer.model.parameters())
        if trainer.discriminator is not None:
            result.extra["discriminator_parameters"] = sum(p.numel() for p in trainer.discriminator.parameters())


def _encoder(spec: CaseSpec, result: CaseResult) -> None:
    """The anatomy encoder's forward + backward alone (training mode), batch = the training batch."""
    config = run_config(spec.config, quick=spec.quick, threads=spec.threads)
    mc = config.model
    torch.manual_seed(0)
    encoder = build_sdnet(mc).anatomy_encoder.train()
    batch = spec.batch or config.train.batch_size
    x, _ = synthetic_slices(batch, mc.image_size, mc.n_classes, seed=0)
    weight = torch.randn(batch, mc.anatomy_channels, mc.image_size, mc.image_size)
    if spec.variant == "channels-last":
        channels_last(encoder)
        x = x.contiguous(memory_format=torch.channels_last)
    elif spec.variant != "nchw":
        raise ValueError(f"unknown encoder variant {spec.variant!r}")

    def step(_: int) -> None:
        encoder.zero_grad(set_to_none=True)
        (encoder(x) * weight).sum().backward()

    result.setup_rss_mb = peak_rss_mb()
    result.measurements["fwd_bwd"] = measure(step, spec, items=batch)


# ---------------------------------------------------------------------------------------------------- inference
def _inference_functions(model: SDNet) -> dict[str, Callable[[Tensor], tuple[Tensor, ...]]]:
    def segment(x: Tensor) -> tuple[Tensor, ...]:
        return (model.segment(x).probabilities,)

    def encode(x: Tensor) -> tuple[Tensor, ...]:
        e = model.encode(x, sample=False)
        return e.anatomy, e.modality.mu

    return {"segment": segment, "encode": encode}


def _max_difference(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> float:
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b, strict=True))


def _inference(spec: CaseSpec, result: CaseResult) -> None:
    config = run_config(spec.config, quick=spec.quick, threads=spec.threads)
    mc = config.model
    torch.manual_seed(0)
    model = build_sdnet(mc).eval()
    batch = spec.batch or 16
    x, _ = synthetic_slices(batch, mc.image_size, mc.n_classes, seed=0)
    wanted = [f.strip() for f in spec.functions.split(",") if f.strip()]
    variant = spec.variant
    with torch.no_grad():  # outputs of the simple variant, to check the others against (not timed)
        reference = {name: fn(x) for name, fn in _inference_functions(model).items()
                     if name in wanted and variant != "simple"}
    if variant not in INFERENCE_VARIANTS:
        raise ValueError(f"unknown inference variant {variant!r}")
    if variant == "fold-bn":
        model = fold_batch_norm(model)
    if variant in ("channels-last", "fold-bn"):
        channels_last(model)
        x = x.contiguous(memory_format=torch.channels_last)
    functions = {name: fn for name, fn in _inference_functions(model).items() if name in wanted}
    result.setup_rss_mb = peak_rss_mb()
    for name, fn in functions.items():
        call: Callable[[Tensor], tuple[Tensor, ...]] = fn
        if variant == "compile":
            compiled = torch.compile(fn)
            start = time.perf_counter()
            try:
                with torch.inference_mode():
                    compiled(x)
            except Exception as exc:  # any compiler failure means "fall back"; reported
                result.extra[f"{name}_compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                continue
            result.extra[f"{name}_compile_s"] = time.perf_counter() - start
            call = compiled

        def run(_: int, call: Callable[[Tensor], tuple[Tensor, ...]] = call) -> tuple[Tensor, ...]:
            if variant == "simple":
                with torch.no_grad():
                    return call(x)
            with torch.inference_mode():
                return call(x)

        result.measurements[name] = measure(run, spec, items=batch, count_flops=variant == "simple")
        out = run(0)
        expected = reference.get(name, out)
        result.extra[f"{name}_max_abs_diff"] = _max_difference(out, expected)
        if name == "segment":
            labels, ref_labels = out[0].argmax(1), expected[0].argmax(1)
            result.extra["segment_label_mismatch"] = float((labels != ref_labels).float().mean())
        else:
            result.extra["encode_anatomy_mismatch"] = float((out[0] != expected[0]).float().mean())
    result.extra["batch"] = batch


SECTIONS: dict[str, Callable[[CaseSpec, CaseResult], None]] = {
    "reference": _reference,
    "train": _train,
    "levers": _train,
    "encoder": _encoder,
    "inference": _inference,
}


def run_case(spec: CaseSpec) -> CaseResult:
    """Run one case in this process; failures are reported in ``error``, never raised."""
    torch.set_num_threads(spec.threads)
    result = CaseResult(spec=asdict(spec))
    start = time.perf_counter()
    try:
        SECTIONS[spec.section](spec, result)
    except Exception as exc:  # a failed case is a row of the report, not a crash
        result.error = f"{type(exc).__name__}: {exc}"
        result.extra["traceback"] = traceback.format_exc(limit=6)
    result.wall_s = time.perf_counter() - start
    result.peak_rss_mb = peak_rss_mb()
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.cases '<CaseSpec JSON>'", file=sys.stderr)
        return 2
    result = run_case(CaseSpec.from_json(args[0]))
    print(RESULT_PREFIX + result.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
