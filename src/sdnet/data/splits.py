"""Subject-level splits (train / validation / test) and the choice of labelled subjects, saved as JSON.

Splits are always made over subject ids, never over slices, so no subject appears in two of train/val/test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sdnet.errors import DataError
from sdnet.outputs import write_text


@dataclass(frozen=True)
class Split:
    """Subject ids of each part. ``labelled`` ⊆ ``train``; the rest of ``train`` is the unlabelled pool, of which
    ``volume`` (LV-volume multi-task, paper §5.2) have volume labels but no masks."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    labelled: tuple[str, ...]
    volume: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parts = {"train": set(self.train), "val": set(self.val), "test": set(self.test)}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = parts[a] & parts[b]
            if shared:
                raise DataError(f"split leaks subjects between {a} and {b}: {sorted(shared)[:5]}")
        if not set(self.labelled) <= parts["train"]:
            raise DataError("split: labelled subjects must be training subjects")
        if not set(self.volume) <= parts["train"] - set(self.labelled):
            raise DataError("split: volume-labelled subjects must be unlabelled training subjects")

    def to_json(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[str]]) -> Split:
        """Rebuild a split from ``{"train": [...], "val": [...], "test": [...], "labelled": [...]}`` (and the
        optional ``"volume": [...]``)."""
        parts = {k: tuple(str(s) for s in data[k]) for k in ("train", "val", "test", "labelled")}
        return cls(**parts, volume=tuple(str(s) for s in data.get("volume", ())))

    def to_dict(self) -> dict[str, list[str]]:
        """The parts as lists (``volume`` only when it is not empty)."""
        return {k: list(v) for k, v in asdict(self).items() if k != "volume" or v}

    def with_volume_subjects(self, count: int, *, seed: int) -> Split:
        """A copy whose ``volume`` part holds ``count`` unlabelled training subjects, drawn with ``seed`` (a split
        that already has them is returned unchanged, so resumed and fine-tuned runs keep theirs).

        Raises:
            DataError: fewer unlabelled training subjects than ``count``.
        """
        if count <= 0 or self.volume:
            return self
        pool = sorted(set(self.train) - set(self.labelled))
        if len(pool) < count:
            raise DataError(f"data.volume_subjects={count} but only {len(pool)} unlabelled training subjects")
        rng = np.random.default_rng(seed + 7907)
        chosen = tuple(sorted(pool[i] for i in rng.permutation(len(pool))[:count]))
        return Split(train=self.train, val=self.val, test=self.test, labelled=self.labelled, volume=chosen)

    @classmethod
    def from_json(cls, path: str | Path) -> Split:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{p}: not a valid split file ({exc})") from None


def split_subjects(
    subjects: Sequence[str],
    *,
    val_fraction: float,
    test_fraction: float,
    labelled_fraction: float = 1.0,
    labelled_subjects: int = 0,
    seed: int = 1,
    fold: int = 0,
) -> Split:
    """Shuffle subjects with ``seed`` and cut them into train/val/test, then pick the labelled training subjects.

    ``fold`` k rotates the shuffled order by k test-set sizes, so folds 0, 1, 2 of a 70/15/15 split have disjoint
    test sets (the paper's 3-fold cross-validation); validation is the block after the test block.
    Each non-zero fraction gets at least one subject. The labelled set is ``labelled_subjects`` subjects when that
    is > 0, else ``max(1, round(labelled_fraction · #train))``.

    Raises:
        DataError: when there are too few subjects for the requested split.
    """
    ids = sorted(set(subjects))
    if not ids:
        raise DataError("no subjects to split: the dataset is empty")
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    n = len(order)
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    n_train = n - n_val - n_test
    if fold < 0:
        raise DataError(f"fold must be >= 0, got {fold}")
    shift = (fold * max(n_test, 1)) % n
    order = order[shift:] + order[:shift]
    if n_train < 1:
        raise DataError(f"only {n} subjects: too few for validation fraction {val_fraction} and test {test_fraction}")
    test = tuple(sorted(order[:n_test]))
    val = tuple(sorted(order[n_test : n_test + n_val]))
    train_order = order[n_test + n_val :]
    if labelled_subjects > 0:
        if labelled_subjects > len(train_order):
            raise DataError(f"asked for {labelled_subjects} labelled subjects but only {len(train_order)} train")
        n_lab = labelled_subjects
    else:
        n_lab = max(1, min(len(train_order), math.floor(labelled_fraction * len(train_order) + 0.5)))
    labelled = tuple(sorted(train_order[:n_lab]))
    return Split(train=tuple(sorted(train_order)), val=val, test=test, labelled=labelled)


def fixed_split(
    train: Sequence[str],
    val: Sequence[str],
    test: Sequence[str],
    *,
    labelled_fraction: float = 1.0,
    labelled_subjects: int = 0,
    seed: int = 1,
) -> Split:
    """A split given by fixed lists (e.g. SSL4MIS's 70/10/20), with the labelled subjects drawn from ``train``.

    The labelled subjects are the first ``n`` of the training list shuffled with ``seed``; ``n`` as in
    :func:`split_subjects`.
    """
    ids = sorted(set(train))
    if not ids:
        raise DataError("fixed split: the training list is empty")
    if labelled_subjects > len(ids):
        raise DataError(f"asked for {labelled_subjects} labelled subjects but only {len(ids)} train")
    n_lab = labelled_subjects or max(1, min(len(ids), math.floor(labelled_fraction * len(ids) + 0.5)))
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return Split(train=tuple(ids), val=tuple(sorted(set(val))), test=tuple(sorted(set(test))),
                 labelled=tuple(sorted(order[:n_lab])))


def modality_blocks(train: Sequence[str], mix: Mapping[str, float], *, seed: int) -> dict[str, frozenset[str]]:
    """Which training subjects contribute images of each modality (multimodal training, paper Table 3).

    The training subjects are put in one seeded order; each modality in turn takes the next
    ``max(1, round(fraction * n))`` subjects (none for fraction 0), wrapping around at the end. Fractions summing to
    at most 1 therefore give disjoint subject sets (no anatomy seen in two modalities, as in MM-WHS where MR and CT
    come from different people); larger sums overlap.

    Args:
        train: training subject ids.
        mix: modality -> fraction of the training subjects in [0, 1], in the order of ``data.modality``.
        seed: seed of the order (the split seed).

    Returns:
        modality -> subject ids.
    """
    order = sorted(train)
    np.random.default_rng(seed + 7919).shuffle(order)  # offset: not the order of the labelled-subject draw
    n = len(order)
    out: dict[str, frozenset[str]] = {}
    start = 0
    for modality, fraction in mix.items():
        count = 0 if fraction <= 0 or n == 0 else min(n, max(1, round(fraction * n)))
        out[modality] = frozenset(order[(start + i) % n] for i in range(count))
        start += count
    return out
