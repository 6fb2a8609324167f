"""The table of a semi-supervised study (paper Tables 1 and 2): Dice per class and average, per method and label
amount, with the paired t-test of the best method against the second best, as Markdown, CSV and a PNG figure.

Numbers are pooled over the *test volumes of every fold and seed* of a cell: each class column is the mean ± std
(ddof 0, like ``sdnet evaluate``) of the per-volume Dice; the average column is the mean ± std of each volume's
average over its classes. Per label amount the method with the highest average is bold, and a paired t-test
(:func:`scipy.stats.ttest_rel`) compares its per-volume average Dice with the second-best method's, pairing volumes
by (fold, seed, subject, phase); an asterisk marks p < 0.05, as in the paper. Runs without a study
``result.json`` appear as '—' with a note, never as an error.

:func:`write_table` writes the table for both Dice definitions — 3D Dice per volume (today's common practice) and
the authors' per-slice average (what the paper's tables report; a slice where a class is in neither prediction nor
truth scores 1) — and, when the grid has a reference method (``unet`` by default), the paired difference of every
other method against it per label amount (:func:`reference_comparisons`).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sdnet.outputs import atomic_output, save_figure, write_text
from sdnet.study.grid import LabelAmount, StudyGrid
from sdnet.study.results import (
    DiceKind,
    RunResult,
    StudyError,
    finite_mean,
    finite_std,
    is_study_result,
    read_result,
    result_name,
)

DASH = "—"
VolumeKey = tuple[int, int, str, int]  # fold, seed, subject, phase


@dataclass(frozen=True)
class TableRow:
    """One method at one label amount.

    Attributes:
        runs_expected / runs_done: run names of the cell in the grid / those with a study result.
        n_labelled_subjects: mean over the finished runs of the labelled subjects their splits hold (NaN if none).
        n_volumes: test volumes pooled over folds and seeds.
        class_mean / class_std: per-class Dice over the pooled volumes.
        avg_mean / avg_std: the per-volume class average over the pooled volumes.
        best: the highest ``avg_mean`` of its label amount.
        p_value: on the best row only: paired t-test against ``compared_with`` on ``n_pairs`` volumes (None when
            there is no second method or fewer than two pairs).
    """

    method: str
    label: LabelAmount
    runs_expected: tuple[str, ...]
    runs_done: tuple[str, ...]
    n_labelled_subjects: float
    n_volumes: int
    class_mean: tuple[float, ...]
    class_std: tuple[float, ...]
    avg_mean: float
    avg_std: float
    best: bool = False
    p_value: float | None = None
    compared_with: str = ""
    n_pairs: int = 0

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(r for r in self.runs_expected if r not in self.runs_done)


@dataclass(frozen=True)
class StudyTable:
    """The rows of a study table, in grid order (label amount, then method), with notes on missing runs."""

    study_dir: Path
    grid: StudyGrid
    metric: DiceKind
    class_names: tuple[str, ...]
    rows: tuple[TableRow, ...]
    notes: tuple[str, ...]
    per_volume: dict[tuple[str, str], dict[VolumeKey, float]] = dataclasses.field(default_factory=dict)
    """(label key, method) -> per-volume class-average Dice of the cell's finished runs (for paired tests)."""
    snapshot: int | None = None
    """The runs' snapshots at this iteration (``result_s<N>.json``) rather than their ``best.pt``."""

    def markdown(self) -> str:
        g = self.grid
        checkpoint = "`best.pt`" if self.snapshot is None else (
            f"`best_s{self.snapshot}.pt`, the best checkpoint as it stood at iteration {self.snapshot} "
            "(`train.snapshot_steps`)")
        metric = "3D Dice" if self.metric == "3d" else "per-slice Dice (authors' average)"
        lines = [
            f"# Semi-supervised study: {self.study_dir.name}"
            + ("" if self.snapshot is None else f" — at iteration {self.snapshot}"),
            "",
            f"Protocol `{g.protocol}`, folds {', '.join(map(str, g.folds))}, seeds {', '.join(map(str, g.seeds))}; "
            f"config `{g.config_path or '(defaults)'}`"
            + (f"; overrides `{' '.join(g.base_overrides)}`" if g.base_overrides else "") + ".",
            "",
            f"Test {metric} of {checkpoint}: mean ± std over the test volumes of all folds and seeds; *avg* is each "
            "volume's average over the classes. **Bold**: best average per label amount. *p*: paired t-test "
            "(`scipy.stats.ttest_rel`) of the best against the second-best method on per-volume average Dice, "
            "paired by fold, seed and volume; \\* p < 0.05.",
            "",
            "| labelled | method | runs | volumes | " + " | ".join(self.class_names) + " | avg | p (best vs 2nd) |",
            "|" + "---|" * (len(self.class_names) + 6),
        ]
        for row in self.rows:
            label = _label_text(row)
            runs = f"{len(row.runs_done)}/{len(row.runs_expected)}"
            if not row.runs_done:
                cells = [DASH] * (len(self.class_names) + 1)
                lines.append(f"| {label} | {row.method} | {runs} | {DASH} | " + " | ".join(cells) + " | |")
                continue
            cells = [_pm(m, s) for m, s in zip(row.class_mean, row.class_std, strict=True)]
            avg = _pm(row.avg_mean, row.avg_std)
            if row.best:
                avg = f"**{avg}**" + ("\\*" if row.p_value is not None and row.p_value < 0.05 else "")
            p = ""
            if row.best and row.p_value is not None:
                p = f"{row.p_value:.3g} (vs {row.compared_with}, {row.n_pairs} pairs)"
            elif row.best and row.compared_with:
                p = f"{DASH} (vs {row.compared_with}, {row.n_pairs} pairs)"
            lines.append(f"| {label} | {row.method} | {runs} | {row.n_volumes} | " + " | ".join(cells)
                         + f" | {avg} | {p} |")
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def csv_rows(self) -> list[list[object]]:
        """The header and one row per table row, as :meth:`write_csv` writes them."""
        header: list[object] = [
            "method", "labelled", "labelled_subjects_requested", "labelled_fraction_requested",
            "labelled_subjects", "runs_done", "runs_expected", "volumes",
            *[f"{n}_{s}" for n in (*self.class_names, "avg") for s in ("mean", "std")],
            "best", "p_value", "compared_with", "pairs", "missing_runs"]
        rows: list[list[object]] = [header]
        for r in self.rows:
            stats: list[str] = []
            for m, s in zip((*r.class_mean, r.avg_mean), (*r.class_std, r.avg_std), strict=True):
                stats += [_num(m), _num(s)]
            rows.append([r.method, r.label.key, r.label.subjects or "", r.label.fraction or "",
                         _num(r.n_labelled_subjects), len(r.runs_done), len(r.runs_expected), r.n_volumes,
                         *stats, int(r.best), "" if r.p_value is None else f"{r.p_value:.6g}", r.compared_with,
                         r.n_pairs if r.compared_with else "", " ".join(r.missing)])
        return rows

    def write_csv(self, path: str | Path) -> Path:
        out = Path(path)
        with atomic_output(out) as tmp_path, tmp_path.open("w", newline="") as f:
            csv.writer(f).writerows(self.csv_rows())
        return out


@dataclass(frozen=True)
class TableFiles:
    """Paths written by :func:`write_table`."""

    markdown: Path
    csv: Path
    figure: Path


def _pm(mean: float, std: float) -> str:
    return DASH if not math.isfinite(mean) else f"{mean:.3f} ± {std:.3f}"


def _num(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else ""


def _label_text(row: TableRow) -> str:
    if row.label.fraction and math.isfinite(row.n_labelled_subjects):
        return f"{row.label.text} ({row.n_labelled_subjects:g} subjects)"
    return row.label.text


def load_results(study_dir: Path, grid: StudyGrid, *, snapshot: int | None = None
                 ) -> tuple[dict[str, RunResult], list[str]]:
    """The study results of the grid's finished runs, by run name, and notes on unreadable ones (a run whose
    ``result.json`` is still the trainer's own summary is simply not finished). ``snapshot=N``: the results of
    the runs' snapshots at iteration N (``result_s<N>.json``, ``train.snapshot_steps``) instead."""
    results: dict[str, RunResult] = {}
    notes: list[str] = []
    for spec in grid.runs:
        path = study_dir / spec.name / result_name(snapshot)
        if not path.exists() or not is_study_result(path):
            continue
        try:
            results[spec.name] = read_result(path.parent, snapshot=snapshot)
        except StudyError as exc:
            notes.append(f"{spec.name}: unreadable result ({exc}); counted as missing.")
    return results, notes


def _pooled(results: Sequence[RunResult], metric: DiceKind) -> dict[VolumeKey, tuple[tuple[float, ...], float]]:
    """(fold, seed, subject, phase) -> (per-class Dice, class average) over the runs of one cell."""
    return {(r.fold, r.seed, v.subject, v.phase): (v.dice(metric), v.mean_dice(metric))
            for r in results for v in r.volumes}


def paired_ttest(best: dict[VolumeKey, float], second: dict[VolumeKey, float]) -> tuple[float | None, int]:
    """Two-sided paired t-test (``scipy.stats.ttest_rel``) on the volumes both have with finite values.

    Returns:
        (p-value, or None when fewer than two pairs or the test is undefined; the number of pairs).
    """
    from scipy.stats import ttest_rel

    keys = sorted(k for k in best.keys() & second.keys() if math.isfinite(best[k]) and math.isfinite(second[k]))
    if len(keys) < 2:
        return None, len(keys)
    p = float(ttest_rel([best[k] for k in keys], [second[k] for k in keys]).pvalue)
    return (p if math.isfinite(p) else None), len(keys)


def build_table(study_dir: str | Path, *, metric: DiceKind = "3d", snapshot: int | None = None) -> StudyTable:
    """Collect the study's ``result.json`` files (``result_s<N>.json`` with ``snapshot=N``: the runs' best
    checkpoints as they stood at iteration N) into table rows (see the module docstring).

    Raises:
        StudyError: no ``study.json``, or runs that disagree on the class names.
    """
    root = Path(study_dir)
    grid = StudyGrid.read(root)
    results, notes = load_results(root, grid, snapshot=snapshot)
    class_names: tuple[str, ...] = ()
    for r in results.values():
        if class_names and r.class_names != class_names:
            raise StudyError(f"{root / r.name / 'result.json'}: classes {list(r.class_names)} differ from "
                             f"{list(class_names)} of the other runs")
        class_names = class_names or r.class_names
    rows: list[TableRow] = []
    volumes_of: dict[tuple[str, str], dict[VolumeKey, float]] = {}
    for label in grid.labels:
        cell_rows: list[TableRow] = []
        per_volume: dict[str, dict[VolumeKey, float]] = {}
        for method in grid.methods:
            expected = tuple(s.name for s in grid.runs if s.method == method and s.label == label)
            done = [results[n] for n in expected if n in results]
            pooled = _pooled(done, metric)
            per_volume[method] = {k: avg for k, (_, avg) in pooled.items()}
            n_classes = len(class_names)
            columns = [[dice[c] for dice, _ in pooled.values()] for c in range(n_classes)]
            averages = list(per_volume[method].values())
            cell_rows.append(TableRow(
                method=method, label=label, runs_expected=expected, runs_done=tuple(r.name for r in done),
                n_labelled_subjects=finite_mean([r.n_labelled_subjects for r in done]), n_volumes=len(pooled),
                class_mean=tuple(finite_mean(c) for c in columns), class_std=tuple(finite_std(c) for c in columns),
                avg_mean=finite_mean(averages), avg_std=finite_std(averages),
            ))
            index = {spec.name: spec.index for spec in grid.runs}
            missing = [f"{n} (run {index[n]})" for n in expected if n not in results]
            if not done:
                notes.append(f"{method}, {label.text}: no finished runs ({len(expected)} expected: "
                             f"{', '.join(missing)}).")
            elif len(done) < len(expected):
                notes.append(f"{method}, {label.text}: {len(missing)} of {len(expected)} runs missing "
                             f"({', '.join(missing)}); the row pools the others.")
        ranked = sorted((r for r in cell_rows if math.isfinite(r.avg_mean)), key=lambda r: -r.avg_mean)
        if ranked:
            best = ranked[0]
            p, pairs, other = None, 0, ""
            if len(ranked) > 1:
                other = ranked[1].method
                p, pairs = paired_ttest(per_volume[best.method], per_volume[other])
                if p is None:
                    notes.append(f"{label.text}: no t-test of {best.method} vs {other} ({pairs} paired volumes).")
            cell_rows = [dataclasses.replace(r, best=True, p_value=p, compared_with=other, n_pairs=pairs)
                         if r is best else r for r in cell_rows]
        rows += cell_rows
        for method, values in per_volume.items():
            volumes_of[(label.key, method)] = values
    if not results:
        notes.insert(0, "no finished runs yet.")
    return StudyTable(study_dir=root, grid=grid, metric=metric, class_names=class_names, rows=tuple(rows),
                      notes=tuple(notes), per_volume=volumes_of, snapshot=snapshot)


@dataclass(frozen=True)
class Comparison:
    """A method against the reference method at one label amount, on the volumes both have (paired t-test)."""

    label: LabelAmount
    method: str
    reference: str
    mean: float
    reference_mean: float
    difference: float
    p_value: float | None
    n_pairs: int


def reference_comparisons(table: StudyTable, reference: str = "unet") -> list[Comparison]:
    """Every method of the grid against ``reference`` per label amount: mean per-volume class-average Dice of both
    on their common volumes (paired by fold, seed, subject, phase), the difference and the paired t-test's p.
    Empty when the grid has no ``reference`` method; cells without common volumes are left out."""
    if reference not in table.grid.methods:
        return []
    out: list[Comparison] = []
    for label in table.grid.labels:
        ref = table.per_volume.get((label.key, reference), {})
        for method in table.grid.methods:
            if method == reference:
                continue
            own = table.per_volume.get((label.key, method), {})
            keys = sorted(k for k in own.keys() & ref.keys() if math.isfinite(own[k]) and math.isfinite(ref[k]))
            if not keys:
                continue
            p, pairs = paired_ttest({k: own[k] for k in keys}, {k: ref[k] for k in keys})
            mean, ref_mean = finite_mean([own[k] for k in keys]), finite_mean([ref[k] for k in keys])
            out.append(Comparison(label=label, method=method, reference=reference, mean=mean,
                                  reference_mean=ref_mean, difference=mean - ref_mean, p_value=p, n_pairs=pairs))
    return out


def comparisons_markdown(comparisons: Sequence[Comparison], metric: DiceKind) -> str:
    """A Markdown table of :func:`reference_comparisons` (empty string when there are none)."""
    if not comparisons:
        return ""
    kind = "3D Dice" if metric == "3d" else "per-slice Dice"
    lines = [f"Paired differences against `{comparisons[0].reference}` ({kind}, per-volume class average; "
             "`scipy.stats.ttest_rel` over the volumes both have):", "",
             "| labelled | method | mean | reference | difference | p | pairs |", "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        p = DASH if c.p_value is None else f"{c.p_value:.3g}"
        lines.append(f"| {c.label.text} | {c.method} | {c.mean:.3f} | {c.reference_mean:.3f} | "
                     f"{c.difference:+.3f} | {p} | {c.n_pairs} |")
    return "\n".join(lines) + "\n"


def plot_dice_vs_labels(table: StudyTable, path: str | Path) -> Path:
    """Average test Dice (± std over volumes) against the number of labelled subjects, one line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs_all: list[float] = []
    for method in table.grid.methods:
        points = sorted((r.n_labelled_subjects, r.avg_mean, r.avg_std) for r in table.rows
                        if r.method == method and math.isfinite(r.avg_mean) and math.isfinite(r.n_labelled_subjects))
        if not points:
            continue
        xs, ys, es = zip(*points, strict=True)
        xs_all += xs
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    if xs_all:
        if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 4:
            ax.set_xscale("log")
        ticks = sorted(set(xs_all))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("labelled training subjects")
    kind = "3D" if table.metric == "3d" else "per-slice"
    ax.set_ylabel(f"test {kind} Dice, class average")
    ax.set_title(f"{table.study_dir.name} ({table.grid.protocol} protocol): mean ± std over test volumes",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    save_figure(fig, out, dpi=120)
    return out


def write_table(
    study_dir: str | Path, *, metrics: Sequence[DiceKind] = ("3d", "slice"), reference: str = "unet",
    snapshot: int | None = None,
) -> TableFiles:
    """Write ``table.md`` (one section per Dice definition in ``metrics``, each with its paired differences against
    ``reference`` when the grid has it), ``table.csv`` (a ``metric`` column tells the definitions apart) and
    ``dice_vs_labels.png`` (the first metric) into the study folder; with ``snapshot=N`` the table of the runs'
    snapshots at iteration N, as ``table_s<N>.md``, ``table_s<N>.csv``, ``dice_vs_labels_s<N>.png``."""
    if not metrics:
        raise StudyError("write_table: no metric asked for")
    root = Path(study_dir)
    suffix = "" if snapshot is None else f"_s{int(snapshot)}"
    tables = [build_table(root, metric=m, snapshot=snapshot) for m in metrics]
    parts: list[str] = []
    for k, table in enumerate(tables):
        lines = table.markdown().splitlines()
        title, body = "\n".join(lines[:2]), "\n".join(lines[2:]) + "\n"  # one title for the file
        kind = "3D Dice" if table.metric == "3d" else "Per-slice Dice (the authors' definition)"
        if len(tables) == 1:
            parts.append(title + "\n" + body)
        else:
            parts.append((title + "\n" if k == 0 else "") + f"## {kind}\n\n" + body)
        comparison = comparisons_markdown(reference_comparisons(table, reference), table.metric)
        if comparison:
            parts.append(comparison)
    md = root / f"table{suffix}.md"
    write_text(md, "\n".join(parts))
    csv_path = root / f"table{suffix}.csv"
    with atomic_output(csv_path) as tmp_path, tmp_path.open("w", newline="") as f:
        w = csv.writer(f)
        for k, table in enumerate(tables):
            for i, row in enumerate(table.csv_rows()):
                if i == 0 and k > 0:
                    continue
                w.writerow(["metric" if i == 0 else table.metric, *row])
    figure = plot_dice_vs_labels(tables[0], root / f"dice_vs_labels{suffix}.png")
    return TableFiles(markdown=md, csv=csv_path, figure=figure)
