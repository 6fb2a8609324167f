"""Studies of SDNet variants on the semi-supervised study's runner: the modality mixtures of paper Table 3 (§5.3.1)
and the factor-size sweep of §5.6.

A variant is a named list of config overrides, planned with :func:`~sdnet.study.grid.plan_study`'s ``variants``, so
it gets everything the study runner gives (run folders, restart, ``--jobs``, ``--run-index``, test-only results).

* mixtures: ``MR:1,CT:0.125`` → variant ``MR1-CT0.125`` with ``data.modality_mix`` set; fully supervised as in the
  paper (the config decides), table: Dice on each modality's test volumes (:func:`mixture_table`);
* factor sizes: C × n_z → variant ``C8-nz16`` with ``model.anatomy_channels`` and ``model.n_z``; table: test Dice and
  the posterior variance of each z dimension (:func:`factor_table`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sdnet.analysis.runs import factor_sizes
from sdnet.outputs import write_text
from sdnet.study.grid import (
    LabelAmount,
    Protocol,
    StudyGrid,
    StudyPlan,
    labelled_fractions,
    labelled_subjects,
    plan_study,
)
from sdnet.study.results import RunResult, StudyError, finite_mean, finite_std
from sdnet.study.table import DiceKind, load_results, write_table

__all__ = ["FactorRow", "MixtureRow", "factor_table", "factor_variants", "mixture_name", "mixture_table",
           "mixture_variants", "plan_kind", "write_study_table"]

StudyKind = Literal["semi", "mix", "factors"]


def mixture_name(mix: str) -> str:
    """Folder-safe name of a modality mixture: ``MR:1,CT:0.125`` → ``MR1-CT0.125``.

    Raises:
        StudyError: not ``MODALITY:FRACTION`` pairs.
    """
    parts = []
    for item in mix.split(","):
        name, sep, value = item.partition(":")
        try:
            fraction = float(value)
        except ValueError:
            fraction = math.nan
        if not sep or not name.strip() or not 0 <= fraction <= 1:
            raise StudyError(f"a mixture is MODALITY:FRACTION pairs with fractions in [0, 1], e.g. MR:1,CT:0.125; "
                             f"got {mix!r}")
        parts.append(f"{name.strip()}{fraction:g}")
    return "-".join(parts)


def mixture_variants(mixes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Variant name → overrides (``data.modality_mix``) of each mixture, in order."""
    out: dict[str, tuple[str, ...]] = {
        mixture_name(m): (f"data.modality_mix={json.dumps(m.replace(' ', ''))}",) for m in mixes}
    if len(out) != len(mixes):
        raise StudyError(f"duplicate mixtures in {list(mixes)}")
    return out


def factor_variants(channels: Sequence[int], n_z: Sequence[int]) -> dict[str, tuple[str, ...]]:
    """Variant name ``C<C>-nz<n_z>`` → overrides, for every anatomy-channel count × modality-factor size."""
    if not channels or not n_z or min([*channels, *n_z]) < 1:
        raise StudyError(f"factor sizes must be >= 1, got C {list(channels)} and n_z {list(n_z)}")
    return {f"C{c}-nz{n}": (f"model.anatomy_channels={c}", f"model.n_z={n}") for c in channels for n in n_z}


def _results(study_dir: Path, grid: StudyGrid) -> dict[str, list[RunResult]]:
    """Finished runs per variant (grid order); unfinished or unreadable runs count as missing."""
    by_name, _ = load_results(study_dir, grid)
    out: dict[str, list[RunResult]] = {m: [] for m in grid.methods}
    for spec in grid.runs:
        if spec.name in by_name:
            out[spec.method].append(by_name[spec.name])
    return out


def _write_table(study_dir: Path, markdown: list[str], csv: list[str]) -> tuple[Path, Path]:
    """Write ``table.md`` and ``table.csv`` into the study folder."""
    md_path, csv_path = study_dir / "table.md", study_dir / "table.csv"
    write_text(md_path, "\n".join(markdown) + "\n")
    write_text(csv_path, "\n".join(csv) + "\n")
    return md_path, csv_path


@dataclass(frozen=True)
class MixtureRow:
    """One mixture: its training fractions and, per test modality, the mean and std of the volumes' mean 3D Dice
    (pooled over folds) and the number of volumes."""

    name: str
    fractions: dict[str, float]
    dice: dict[str, tuple[float, float, int]]
    runs: int


def mixture_table(study_dir: str | Path) -> tuple[list[MixtureRow], Path, Path]:
    """Paper Table 3 from a mixture study folder: writes ``table.md`` and ``table.csv``.

    Returns:
        The rows and the two files.
    """
    base = Path(study_dir)
    grid = StudyGrid.read(base)
    results = _results(base, grid)
    modalities: list[str] = []
    rows = []
    for name in grid.methods:
        spec = next(r for r in grid.runs if r.method == name)
        mix = next(o.split("=", 1)[1] for o in spec.variant if o.startswith("data.modality_mix="))
        fractions = {k: float(v) for k, v in (item.split(":") for item in json.loads(mix).split(","))}
        modalities += [m for m in fractions if m not in modalities]
        per_modality: dict[str, list[float]] = {}
        for result in results[name]:
            for v in result.volumes:
                per_modality.setdefault(v.modality, []).append(v.mean_dice("3d"))
        dice = {m: (finite_mean(d), finite_std(d), len(d)) for m, d in per_modality.items()}
        rows.append(MixtureRow(name=name, fractions=fractions, dice=dice, runs=len(results[name])))
    head = [f"{m} train" for m in modalities] + [f"{m} test Dice" for m in modalities]
    lines = [f"# Modality mixtures ({base})", "",
             "Test 3D Dice (mean over classes per volume; mean ± std over the test volumes of each modality, all "
             "folds pooled). Train fractions are of the training subjects, per modality.", "",
             "| " + " | ".join([*head, "runs"]) + " |", "|" + "---|" * (len(head) + 1)]
    csv = [",".join(["variant", *(f"{m}_train" for m in modalities),
                     *(f"{m}_{k}" for m in modalities for k in ("dice_mean", "dice_std", "n_volumes")), "runs"])]
    for row in rows:
        cells = [f"{100 * row.fractions.get(m, 0):g}%" for m in modalities]
        for m in modalities:
            mean, std, n = row.dice.get(m, (math.nan, math.nan, 0))
            trained = row.fractions.get(m, 0) > 0  # as the paper: no score for a modality never trained on
            cells.append(f"{mean:.3f} ± {std:.3f}" if n and trained else "—")
        lines.append("| " + " | ".join([*cells, str(row.runs)]) + " |")
        csv.append(",".join([row.name, *(f"{row.fractions.get(m, 0):g}" for m in modalities),
                             *(f"{row.dice.get(m, (math.nan, math.nan, 0))[k]:.6g}" for m in modalities
                               for k in range(3)), str(row.runs)]))
    md_path, csv_path = _write_table(base, lines, csv)
    return rows, md_path, csv_path


@dataclass(frozen=True)
class FactorRow:
    """One factor size: C, n_z, test Dice (mean ± std over volumes, folds pooled), the posterior variance of each z
    dimension on the test slices (of the first finished fold; sorted ascending: small = informative) and the
    fraction of test pixels at which each anatomy channel is on (same run; sorted descending: trailing 0 = unused)."""

    name: str
    channels: int
    n_z: int
    dice: tuple[float, float, int]
    variances: tuple[float, ...]
    runs: int
    channel_usage: tuple[float, ...] = ()


def factor_table(study_dir: str | Path, *, active_below: float = 0.9,
                 used_above: float = 1e-3) -> tuple[list[FactorRow], Path, Path]:
    """The factor-size table (paper §5.6) of a factor study folder: writes ``table.md`` and ``table.csv``.

    A z dimension counts as *active* when its mean posterior variance is below ``active_below`` (an unused
    dimension keeps the prior's variance 1, Burgess et al.); an anatomy channel counts as *used* when it is on in
    more than ``used_above`` of the test pixels (the paper: "when C > 8 many channels are all zero").
    """
    base = Path(study_dir)
    grid = StudyGrid.read(base)
    results = _results(base, grid)
    rows = []
    for name in grid.methods:
        spec = next(r for r in grid.runs if r.method == name)
        values = {o.split("=", 1)[0]: int(o.split("=", 1)[1]) for o in spec.variant}
        finished = results[name]
        dice = [v.mean_dice("3d") for r in finished for v in r.volumes]
        variances: tuple[float, ...] = ()
        usage: tuple[float, ...] = ()
        if finished:
            stats, channel_usage = factor_sizes(base / finished[0].name / "best.pt")
            variances = tuple(sorted(stats.mean_variance))
            usage = tuple(sorted((float(u) for u in channel_usage), reverse=True))
        rows.append(FactorRow(name=name, channels=values["model.anatomy_channels"], n_z=values["model.n_z"],
                              dice=(finite_mean(dice), finite_std(dice), len(dice)), variances=variances,
                              runs=len(finished), channel_usage=usage))
    lines = [f"# Factor sizes ({base})", "",
             "Test 3D Dice (mean over classes per volume; mean ± std over test volumes, folds pooled); the mean "
             "posterior variance of each z dimension on the test slices (sorted; < "
             f"{active_below:g} = active, ~1 = unused, Burgess et al. 2018); the percentage of test pixels at which "
             f"each anatomy channel of s is on (sorted; used = more than {100 * used_above:g} %).", "",
             "| C | n_z | test Dice | active z dims | posterior variances | used s channels | s channel usage (%) "
             "| runs |", "|---|---|---|---|---|---|---|---|"]
    csv = ["variant,C,n_z,dice_mean,dice_std,n_volumes,active_dims,variances,used_channels,channel_usage,runs"]
    for row in rows:
        active = sum(v < active_below for v in row.variances)
        used = sum(u > used_above for u in row.channel_usage)
        dice_text = "—" if not row.dice[2] else f"{row.dice[0]:.3f} ± {row.dice[1]:.3f}"
        shown = ", ".join(f"{v:.2f}" for v in row.variances) or "—"
        shown_usage = ", ".join(f"{100 * u:.1f}" for u in row.channel_usage) or "—"
        lines.append(f"| {row.channels} | {row.n_z} | {dice_text} | {active if row.variances else '—'} | {shown} | "
                     f"{used if row.channel_usage else '—'} | {shown_usage} | {row.runs} |")
        csv.append(f"{row.name},{row.channels},{row.n_z},{row.dice[0]:.6g},{row.dice[1]:.6g},{row.dice[2]},{active},"
                   f"{' '.join(f'{v:.6g}' for v in row.variances)},{used},"
                   f"{' '.join(f'{u:.6g}' for u in row.channel_usage)},{row.runs}")
    if rows and all(r.runs for r in rows):
        grid_dice = np.array([[next(r.dice[0] for r in rows if r.channels == c and r.n_z == n)
                               for n in sorted({r.n_z for r in rows})] for c in sorted({r.channels for r in rows})])
        best = np.unravel_index(np.nanargmax(grid_dice), grid_dice.shape) if np.isfinite(grid_dice).any() else None
        if best is not None:
            lines += ["", f"Best test Dice: C = {sorted({r.channels for r in rows})[best[0]]}, n_z = "
                      f"{sorted({r.n_z for r in rows})[best[1]]} ({np.nanmax(grid_dice):.3f})."]
    md_path, csv_path = _write_table(base, lines, csv)
    return rows, md_path, csv_path


def plan_kind(kind: StudyKind, *, config_path: str | Path | None, methods: Sequence[str] = ("sdnet",),
              labelled: Sequence[int] | None = None, fractions: Sequence[float] = (),
              mixes: Sequence[str] = (), channels: Sequence[int] = (), n_z: Sequence[int] = (),
              protocol: Protocol = "paper", folds: int | None = None, seeds: int = 1,
              data_root: str | Path | None = None, overrides: Sequence[str] = ()) -> StudyPlan:
    """The plan of a study of any kind (what ``sdnet experiment semi|mix|factors`` runs).

    ``semi``: ``methods`` × label amounts (``labelled`` subject counts, else ``fractions``); ``mix``: one variant per
    modality mixture in ``mixes``, all data labelled; ``factors``: one variant per C × n_z, with the first of
    ``labelled`` subjects labelled when given (else all).
    """
    variants: dict[str, tuple[str, ...]] = {}
    labels: tuple[LabelAmount, ...]
    if kind == "semi":
        labels = labelled_subjects(labelled) if labelled is not None else labelled_fractions(fractions)
        names = list(methods)
    else:
        variants = mixture_variants(mixes) if kind == "mix" else factor_variants(channels, n_z)
        names = list(variants)
        labels = (labelled_subjects(list(labelled)[:1]) if kind == "factors" and labelled
                  else labelled_fractions([1.0]))
    return plan_study(config_path=config_path, methods=names, labels=labels, protocol=protocol, folds=folds,
                      seeds=seeds, data_root=data_root, overrides=overrides, variants=variants, kind=kind)


def write_study_table(study_dir: str | Path, *, metrics: Sequence[DiceKind] = ("3d", "slice"),
                      reference: str = "unet", snapshot: int | None = None) -> tuple[Path, list[Path]]:
    """Write the table of a study folder of any kind: the semi-supervised table (:func:`write_table`; ``snapshot``:
    of the runs' snapshots at that iteration), the mixture table or the factor-size table, as the study's
    ``study.json`` says.

    Raises:
        StudyError: ``snapshot`` for a mixture or factor-size study (their tables read ``result.json`` only).

    Returns:
        (the Markdown table, every file written).
    """
    kind = StudyGrid.read(study_dir).kind
    if snapshot is not None and kind != "semi":
        raise StudyError(f"--snapshot is for semi-supervised studies; {study_dir} is a {kind} study")
    if kind == "mix":
        _, md, csv = mixture_table(study_dir)
        return md, [md, csv]
    if kind == "factors":
        _, md, csv = factor_table(study_dir)
        return md, [md, csv]
    files = write_table(study_dir, metrics=metrics, reference=reference, snapshot=snapshot)
    return files.markdown, [files.markdown, files.csv, files.figure]
