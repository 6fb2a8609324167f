import pytest

from sdnet.data.splits import Split, split_subjects
from sdnet.errors import DataError


def test_split_is_subject_level_disjoint_and_seeded(tmp_path):
    ids = [f"s{i:03d}" for i in range(40)]
    s = split_subjects(ids, val_fraction=0.15, test_fraction=0.15, labelled_fraction=0.1, seed=3)
    assert not (set(s.train) & set(s.val)) and not (set(s.train) & set(s.test)) and not (set(s.val) & set(s.test))
    assert set(s.train) | set(s.val) | set(s.test) == set(ids)
    assert (len(s.val), len(s.test), len(s.labelled)) == (6, 6, 3)
    assert set(s.labelled) <= set(s.train)
    assert s == split_subjects(ids, val_fraction=0.15, test_fraction=0.15, labelled_fraction=0.1, seed=3)
    assert s != split_subjects(ids, val_fraction=0.15, test_fraction=0.15, labelled_fraction=0.1, seed=4)
    s.to_json(tmp_path / "split.json")
    assert Split.from_json(tmp_path / "split.json") == s


def test_exact_labelled_count_and_errors():
    ids = [f"s{i}" for i in range(10)]
    assert len(split_subjects(ids, val_fraction=0.2, test_fraction=0.2, labelled_subjects=2).labelled) == 2
    with pytest.raises(DataError):
        split_subjects([], val_fraction=0.1, test_fraction=0.1)
    with pytest.raises(DataError):
        split_subjects(["a", "b"], val_fraction=0.5, test_fraction=0.4)
    with pytest.raises(DataError):
        split_subjects(ids, val_fraction=0.2, test_fraction=0.2, labelled_subjects=99)
    with pytest.raises(DataError, match="leaks"):
        Split(train=("a",), val=("a",), test=(), labelled=())


def test_folds_have_disjoint_test_sets_and_never_leak():
    ids = [f"patient{i:03d}" for i in range(100)]
    splits = [split_subjects(ids, val_fraction=0.15, test_fraction=0.15, seed=1, fold=k) for k in range(3)]
    for s in splits:
        assert (len(s.train), len(s.val), len(s.test)) == (70, 15, 15)
        assert not (set(s.train) & set(s.test)) and not (set(s.val) & set(s.test)) and not (set(s.train) & set(s.val))
    assert not (set(splits[0].test) & set(splits[1].test)) and not (set(splits[1].test) & set(splits[2].test))
    assert not (set(splits[0].test) & set(splits[2].test))
