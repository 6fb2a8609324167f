"""Probes of the modality factor z (sdnet.analysis.probes) on tiny synthetic codes with known answers."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from sdnet.analysis.probes import distance_correlation, factor_statistics, linear_probe, modality_probe
from sdnet.errors import SDNetError


def _codes(n: int, n_z: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, n_z))


# ---------------------------------------------------------------------------------------------------------------------
# modality_probe


def test_modality_probe_finds_the_dimension_that_carries_the_class() -> None:
    rng = np.random.default_rng(0)
    n_z, informative = 4, 2

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.array(["MR", "CT"] * (n // 2)))
        z = rng.normal(size=(n, n_z))
        z[:, informative] = np.where(y == "MR", 2.0, -2.0) + 0.5 * rng.normal(size=n)
        return z, y

    z_train, y_train = split(200)
    z_test, y_test = split(200)
    probe = modality_probe(z_train, y_train, z_test, y_test)

    assert probe.accuracy >= 0.97
    assert probe.best_dimension == informative
    assert probe.best_dimension_accuracy >= 0.97
    assert probe.chance == pytest.approx(0.5)  # balanced classes
    others = [acc for d, acc in enumerate(probe.per_dimension_accuracy) if d != informative]
    assert len(others) == n_z - 1
    assert max(abs(acc - probe.chance) for acc in others) <= 0.15
    assert probe.classes == ("CT", "MR")
    assert (probe.n_train, probe.n_test) == (200, 200)


def test_modality_probe_on_codes_independent_of_the_label_stays_at_chance() -> None:
    """The check that the probe can fail: z carries nothing, so no classifier beats always guessing the majority."""
    rng = np.random.default_rng(1)
    y_train = rng.permutation(np.repeat([0, 1], [210, 90]))  # 70 % class 0
    y_test = rng.permutation(np.repeat([0, 1], [200, 100]))  # 2/3 class 0
    probe = modality_probe(_codes(300, 3, seed=2), y_train, _codes(300, 3, seed=3), y_test, seed=0)

    assert probe.chance == pytest.approx(200 / 300)  # training majority (0), scored on the test labels
    assert abs(probe.accuracy - probe.chance) <= 0.08
    assert max(abs(acc - probe.chance) for acc in probe.per_dimension_accuracy) <= 0.08
    assert probe.classes == (0, 1)


def test_modality_probe_handles_more_than_two_classes() -> None:
    rng = np.random.default_rng(4)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, size=n)
        z = 0.3 * rng.normal(size=(n, 2))
        z[:, 0] += 3.0 * y  # the three classes lie apart along dimension 0
        return z, y

    probe = modality_probe(*split(150), *split(150))
    assert probe.classes == (0, 1, 2)
    assert probe.accuracy >= 0.95
    assert probe.best_dimension == 0
    assert probe.per_dimension_accuracy[1] <= 0.6


# ---------------------------------------------------------------------------------------------------------------------
# linear_probe


def test_linear_probe_scores_linear_independent_and_constant_targets() -> None:
    rng = np.random.default_rng(5)
    z_train, z_test = _codes(120, 3, seed=6), _codes(80, 3, seed=7)

    def targets(z: np.ndarray) -> np.ndarray:
        n = z.shape[0]
        linear = 2.0 * z[:, 0] - z[:, 1] + 0.5
        independent = rng.normal(size=n)
        constant = np.full(n, 3.0)
        return np.stack([linear, independent, constant], axis=1)  # (N, 3)

    names = ["contrast", "noise", "fixed"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant target must not produce warnings
        scores = linear_probe(z_train, targets(z_train), z_test, targets(z_test), names)

    assert list(scores) == names
    assert scores["contrast"] >= 0.99
    assert scores["noise"] <= 0.1
    assert math.isnan(scores["fixed"])


def test_linear_probe_reports_nan_for_a_target_constant_only_in_the_test_set() -> None:
    z_train, z_test = _codes(50, 2, seed=8), _codes(20, 2, seed=9)
    scores = linear_probe(z_train, z_train[:, :1], z_test, np.ones((20, 1)), ["a"])
    assert math.isnan(scores["a"])


# ---------------------------------------------------------------------------------------------------------------------
# distance_correlation


def _reference_dcor(x: np.ndarray, y: np.ndarray) -> float:
    """Székely et al.'s (biased, V-statistic) distance correlation written out with numpy."""

    def centred_distances(v: np.ndarray) -> np.ndarray:
        v = v.reshape(v.shape[0], -1).astype(np.float64)  # (N, p)
        d = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(axis=-1))  # (N, N)
        return d - d.mean(axis=0, keepdims=True) - d.mean(axis=1, keepdims=True) + d.mean()

    a, b = centred_distances(x), centred_distances(y)
    dcov2, dvar2_x, dvar2_y = (a * b).mean(), (a * a).mean(), (b * b).mean()
    return float(np.sqrt(dcov2 / np.sqrt(dvar2_x * dvar2_y)))


def test_distance_correlation_matches_a_direct_implementation() -> None:
    rng = np.random.default_rng(10)
    a = rng.normal(size=(12, 3))
    b = np.stack([a[:, 0] ** 2, rng.normal(size=12)], axis=1)  # (12, 2), partly dependent on a
    expected = _reference_dcor(a, b)
    assert 0.05 < expected < 0.95  # a non-trivial case
    assert distance_correlation(a, b) == pytest.approx(expected, rel=1e-9)
    # a 1-D variable is one feature; trailing axes (anatomy maps) are flattened
    assert distance_correlation(a, b[:, 0]) == pytest.approx(_reference_dcor(a, b[:, :1]), rel=1e-9)
    maps = rng.normal(size=(12, 2, 3, 3))
    assert distance_correlation(maps, b) == pytest.approx(_reference_dcor(maps, b), rel=1e-9)


def test_distance_correlation_is_one_for_identical_samples_and_small_for_independent_ones() -> None:
    a = _codes(200, 3, seed=11)
    assert distance_correlation(a, a) == pytest.approx(1.0, abs=1e-9)
    assert distance_correlation(a, 3.0 * a + 1.0) == pytest.approx(1.0, abs=1e-9)
    independent = distance_correlation(a, _codes(200, 2, seed=12))
    dependent = distance_correlation(a, np.abs(a[:, :2]) + 0.1 * _codes(200, 2, seed=13))
    assert independent <= 0.2
    assert dependent >= 0.4


def test_distance_correlation_subsamples_rows_when_there_are_more_than_max_samples() -> None:
    a = _codes(60, 2, seed=14)
    b = a[:, :1] ** 2 + _codes(60, 1, seed=15)
    rows = np.sort(np.random.default_rng(3).choice(60, 20, replace=False))  # the documented subsample

    subsampled = distance_correlation(a, b, max_samples=20, seed=3)
    assert subsampled == pytest.approx(_reference_dcor(a[rows], b[rows]), rel=1e-9)
    assert subsampled != pytest.approx(_reference_dcor(a, b), rel=1e-3)
    assert distance_correlation(a, b, max_samples=20, seed=4) != pytest.approx(subsampled, rel=1e-3)
    # at or under the limit every row is used and the seed plays no part
    full = distance_correlation(a, b, max_samples=60, seed=3)
    assert full == pytest.approx(_reference_dcor(a, b), rel=1e-9)
    assert distance_correlation(a, b, max_samples=60, seed=4) == full


# ---------------------------------------------------------------------------------------------------------------------
# factor_statistics


def test_factor_statistics_match_the_closed_form() -> None:
    mu = np.array([[0.0, 1.0, 2.0], [0.0, -1.0, 2.0]])
    logvar = np.array([[0.0, math.log(0.25), 0.0], [0.0, math.log(0.25), math.log(4.0)]])
    stats = factor_statistics(mu, logvar)

    def kl(m: float, v: float) -> float:  # KL(N(m, v) || N(0, 1))
        return 0.5 * (m * m + v - math.log(v) - 1.0)

    assert stats.mean_variance == pytest.approx((1.0, 0.25, 2.5))
    assert stats.mu_variance == pytest.approx((0.0, 1.0, 0.0))
    assert stats.kl == pytest.approx((0.0, kl(1.0, 0.25), 0.5 * (kl(2.0, 1.0) + kl(2.0, 4.0))))
    assert stats.kl[1] == pytest.approx(0.5 * (0.25 + math.log(4.0)))
    assert stats.n_samples == 2
    assert stats.ranked_dimensions() == (1, 0, 2)  # smallest mean posterior variance first


def test_factor_statistics_of_the_prior_are_unit_variance_and_zero_kl() -> None:
    stats = factor_statistics(np.zeros((5, 4)), np.zeros((5, 4)))
    assert stats.mean_variance == (1.0, 1.0, 1.0, 1.0)
    assert stats.kl == (0.0, 0.0, 0.0, 0.0)
    assert stats.ranked_dimensions() == (0, 1, 2, 3)  # ties keep index order


# ---------------------------------------------------------------------------------------------------------------------
# errors

_Z = _codes(10, 2, seed=16)
_Y = np.array([0, 1] * 5)
_NAN_Z = np.where(np.arange(20).reshape(10, 2) == 3, np.nan, _Z)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: modality_probe(_Z, _Y[:9], _Z, _Y), r"length mismatch.*y_train"),
        (lambda: modality_probe(_Z, _Y, _Z[:8], _Y), r"length mismatch.*y_test"),
        (lambda: modality_probe(_Z, np.zeros(10, dtype=int), _Z, _Y), r"single class"),
        (lambda: modality_probe(_NAN_Z, _Y, _Z, _Y), r"z_train.*non-finite"),
        (lambda: modality_probe(_Z, _Y, np.full_like(_Z, np.inf), _Y), r"z_test.*non-finite"),
        (lambda: modality_probe(_Z[:, 0], _Y, _Z, _Y), r"z_train.*2-D"),
        (lambda: modality_probe(_Z, _Y[:, None], _Z, _Y), r"y_train.*1-D"),
        (lambda: modality_probe(_Z, _Y, _Z[:, :1], _Y), r"dimensions"),
        (lambda: modality_probe(_Z, _Y.astype(float), _Z, _Y), r"int or string"),
        (lambda: modality_probe(_Z, _Y, _Z, _Y.astype(str)), r"label types differ"),
        (lambda: linear_probe(_Z, _Z[:9], _Z, _Z, ["a", "b"]), r"length mismatch.*targets_train"),
        (lambda: linear_probe(_Z, _Z, _Z, _Z, ["a"]), r"2 columns but 1 names"),
        (lambda: linear_probe(_Z, _Z, _Z, _Z, ["a", "a"]), r"duplicate"),
        (lambda: linear_probe(_Z, _NAN_Z, _Z, _Z, ["a", "b"]), r"targets_train.*non-finite"),
        (lambda: linear_probe(_Z, _Z[:, 0], _Z, _Z, ["a"]), r"targets_train.*2-D"),
        (lambda: distance_correlation(_Z, _Z[:9]), r"length mismatch"),
        (lambda: distance_correlation(_NAN_Z, _Z), r": a contains non-finite"),
        (lambda: distance_correlation(_Z[:1], _Z[:1]), r"at least 2 rows"),
        (lambda: distance_correlation(_Z, _Z, max_samples=1), r"max_samples"),
        (lambda: factor_statistics(_Z, _Z[:, :1]), r"shape mismatch"),
        (lambda: factor_statistics(_Z, _NAN_Z), r"logvar.*non-finite"),
        (lambda: factor_statistics(_Z[:, 0], _Z[:, 0]), r"mu.*2-D"),
    ],
)
def test_bad_input_raises_a_named_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(SDNetError, match=message):
        call()
