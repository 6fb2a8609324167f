"""Numeric probes of the modality factor z: what it encodes, and how much (paper §5.4 and §5.6).

Pure functions on numpy arrays (no torch, no model): the caller encodes images and passes the codes.

* :func:`modality_probe` -- paper §5.4: a logistic-regression classifier predicts the image modality from z, with
  all dimensions and with each dimension alone, scored on held-out images.
* :func:`linear_probe` -- held-out R² of a ridge regression predicting known generative parameters (e.g. the
  phantom's rendering or anatomy parameters) from z.
* :func:`distance_correlation` -- the distance correlation between two sets of codes, e.g. flattened anatomy maps s
  and z, as used to measure content-style entanglement by Liu et al. (BMVC 2021, "Measuring the biases and
  effectiveness of content-style disentanglement").
* :func:`factor_statistics` -- paper §5.6, after Burgess et al. (2018, "Understanding disentangling in β-VAE"):
  per-dimension posterior variance, spread of the posterior means and KL to the prior.

Bad input (wrong shapes, non-finite values, a single class) raises :class:`sdnet.errors.SDNetError` with a message
naming the function and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sdnet.errors import SDNetError

RIDGE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 3, 13))
"""Ridge penalties tried by :func:`linear_probe` (chosen per target by efficient leave-one-out CV on training data)."""


# ---------------------------------------------------------------------------------------------------------------------
# Input checks


def _check_codes(name: str, z: np.ndarray, caller: str) -> np.ndarray:
    """A (N, D) finite float64 copy of ``z``, or an :class:`SDNetError` naming ``caller`` and ``name``."""
    z = np.asarray(z)
    if z.ndim != 2:
        raise SDNetError(f"{caller}: {name} must be a 2-D (rows, columns) array, got shape {z.shape}")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise SDNetError(f"{caller}: {name} is empty (shape {z.shape})")
    if not np.issubdtype(z.dtype, np.number) or np.issubdtype(z.dtype, np.complexfloating):
        raise SDNetError(f"{caller}: {name} must hold real numbers, got dtype {z.dtype}")
    z = z.astype(np.float64)
    if not np.all(np.isfinite(z)):
        raise SDNetError(f"{caller}: {name} contains non-finite values (NaN or inf)")
    return z


def _check_labels(name: str, y: np.ndarray, n_rows: int, caller: str) -> np.ndarray:
    """A (N,) array of int/str/bool class labels matching ``n_rows`` codes."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise SDNetError(f"{caller}: {name} must be a 1-D (N,) array of labels, got shape {y.shape}")
    if y.dtype.kind not in "biuUSO":
        raise SDNetError(f"{caller}: {name} must hold int or string class labels, got dtype {y.dtype}")
    if y.shape[0] != n_rows:
        raise SDNetError(f"{caller}: length mismatch: {name} has {y.shape[0]} labels but its z has {n_rows} rows")
    return y


# ---------------------------------------------------------------------------------------------------------------------
# §5.4 modality type estimation


@dataclass(frozen=True)
class ModalityProbe:
    """Held-out accuracy of logistic-regression classifiers predicting the image modality from z (paper §5.4).

    Attributes:
        accuracy: accuracy on the test images of the classifier using all n_z dimensions.
        per_dimension_accuracy: (n_z,) accuracy of the single-input classifier on dimension d, for each d.
        chance: accuracy of always predicting the most frequent training class, on the test labels.
        best_dimension: index d of the single dimension with the highest accuracy (lowest index on ties).
        classes: the sorted distinct training labels.
        n_train: number of training codes.
        n_test: number of test codes.
    """

    accuracy: float
    per_dimension_accuracy: tuple[float, ...]
    chance: float
    best_dimension: int
    classes: tuple[str | int, ...]
    n_train: int
    n_test: int

    @property
    def best_dimension_accuracy(self) -> float:
        """Accuracy of the single-input classifier on :attr:`best_dimension`."""
        return self.per_dimension_accuracy[self.best_dimension]


def _classifier(seed: int) -> Pipeline:
    """Standardisation then L2-regularised (C = 1) logistic regression; multinomial when there are > 2 classes."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=seed))


def modality_probe(
    z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, *, seed: int = 0
) -> ModalityProbe:
    """Train logistic regressions on z to predict the modality label and score them on held-out codes (§5.4).

    As in the paper, one classifier uses every dimension of z and one single-input classifier is trained per
    dimension (to find whether one dimension alone carries the modality). Each classifier standardises its inputs
    (mean and variance of the training codes) before an L2-regularised logistic regression (C = 1, lbfgs); the
    lbfgs solver is deterministic, ``seed`` is passed as its ``random_state`` so the result stays reproducible if
    the solver changes. Test labels absent from training simply count as errors.

    Args:
        z_train: (N_train, n_z) float modality codes (μ or sampled z) of the training images.
        y_train: (N_train,) int or str modality label of each training image; at least two distinct classes.
        z_test: (N_test, n_z) float codes of held-out images (different subjects from training).
        y_test: (N_test,) int or str labels of the held-out images.
        seed: random state given to the classifiers.

    Returns:
        The accuracies, the chance level and the best single dimension.

    Raises:
        SDNetError: wrong ndim, mismatched lengths or n_z, non-finite codes, non-label dtypes (float), string
            labels in one split and numbers in the other, or a single class in ``y_train``.
    """
    caller = "modality_probe"
    z_train = _check_codes("z_train", z_train, caller)
    z_test = _check_codes("z_test", z_test, caller)
    if z_train.shape[1] != z_test.shape[1]:
        raise SDNetError(f"{caller}: z_train has {z_train.shape[1]} dimensions but z_test has {z_test.shape[1]}")
    y_train = _check_labels("y_train", y_train, z_train.shape[0], caller)
    y_test = _check_labels("y_test", y_test, z_test.shape[0], caller)
    if (y_train.dtype.kind in "US") != (y_test.dtype.kind in "US"):
        raise SDNetError(f"{caller}: label types differ: y_train is {y_train.dtype}, y_test is {y_test.dtype}")
    classes, counts = np.unique(y_train, return_counts=True)
    if classes.size < 2:
        only = classes.tolist()[0]
        raise SDNetError(f"{caller}: y_train holds a single class ({only!r}); need at least two to classify")

    def score(train: np.ndarray, test: np.ndarray) -> float:
        model = _classifier(seed).fit(train, y_train)
        return float(np.mean(model.predict(test) == y_test))

    accuracy = score(z_train, z_test)
    per_dimension = tuple(score(z_train[:, [d]], z_test[:, [d]]) for d in range(z_train.shape[1]))
    majority = classes[int(np.argmax(counts))]  # ties: the first in sorted order
    return ModalityProbe(
        accuracy=accuracy,
        per_dimension_accuracy=per_dimension,
        chance=float(np.mean(y_test == majority)),
        best_dimension=int(np.argmax(per_dimension)),
        classes=tuple(classes.tolist()),
        n_train=int(z_train.shape[0]),
        n_test=int(z_test.shape[0]),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Linear read-out of known generative factors


def linear_probe(
    z_train: np.ndarray,
    targets_train: np.ndarray,
    z_test: np.ndarray,
    targets_test: np.ndarray,
    names: Sequence[str],
) -> dict[str, float]:
    """Held-out R² of a ridge regression predicting each named target from z.

    One model per target: standardised z, then ridge regression whose penalty is picked from :data:`RIDGE_ALPHAS`
    by leave-one-out CV on the training codes (``RidgeCV``). The score is ``sklearn.metrics.r2_score`` on the test
    codes: 1 for a perfect linear read-out, about 0 (or below) when z holds no linear information on the target.

    R² is undefined, and reported as NaN (silently, without fitting or warning), for a target that is constant in
    the training set (nothing to learn) or in the test set (no variance to explain).

    Args:
        z_train: (N_train, n_z) float codes.
        targets_train: (N_train, T) float known values of the T targets (e.g. the phantom's rendering parameters).
        z_test: (N_test, n_z) float codes of held-out images; N_test >= 2.
        targets_test: (N_test, T) float targets of the held-out images.
        names: T distinct target names, in column order.

    Returns:
        ``{name: R²}`` for every target, in the order of ``names``.

    Raises:
        SDNetError: wrong ndim, mismatched lengths, columns or names, duplicate names, or non-finite values.
    """
    caller = "linear_probe"
    z_train = _check_codes("z_train", z_train, caller)
    z_test = _check_codes("z_test", z_test, caller)
    targets_train = _check_codes("targets_train", targets_train, caller)
    targets_test = _check_codes("targets_test", targets_test, caller)
    if z_train.shape[1] != z_test.shape[1]:
        raise SDNetError(f"{caller}: z_train has {z_train.shape[1]} dimensions but z_test has {z_test.shape[1]}")
    for z, targets, split in ((z_train, targets_train, "train"), (z_test, targets_test, "test")):
        if targets.shape[0] != z.shape[0]:
            raise SDNetError(
                f"{caller}: length mismatch: targets_{split} has {targets.shape[0]} rows but z_{split} has {z.shape[0]}"
            )
    names = list(names)
    if len(set(names)) != len(names):
        raise SDNetError(f"{caller}: duplicate target names in {names}")
    for targets, split in ((targets_train, "train"), (targets_test, "test")):
        if targets.shape[1] != len(names):
            raise SDNetError(f"{caller}: targets_{split} has {targets.shape[1]} columns but {len(names)} names given")
    if z_test.shape[0] < 2:
        raise SDNetError(f"{caller}: R² needs at least 2 test codes, got {z_test.shape[0]}")

    scores: dict[str, float] = {}
    for column, name in enumerate(names):
        train, test = targets_train[:, column], targets_test[:, column]
        if np.ptp(train) == 0 or np.ptp(test) == 0:
            scores[name] = float("nan")
            continue
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS)).fit(z_train, train)
        scores[name] = float(r2_score(test, model.predict(z_test)))
    return scores


# ---------------------------------------------------------------------------------------------------------------------
# Distance correlation (Liu et al., BMVC 2021)


def distance_correlation(a: np.ndarray, b: np.ndarray, *, max_samples: int = 2000, seed: int = 0) -> float:
    """Distance correlation dCor(a, b) between paired samples, computed by the ``dcor`` package.

    The standard (V-statistic, not bias-corrected) estimator of Székely et al. (2007), ``dcor.distance_correlation``
    with Euclidean distances: the square root of dCov²(a, b) / sqrt(dVar²(a) dVar²(b)), each term the mean of the
    product of double-centred pairwise-distance matrices. It lies in [0, 1], is 1 for b = a (or any similarity
    transform of a) and 0 when either input is constant. For independent samples it is small but positive and
    shrinks as N grows (roughly like 1/sqrt(N)), so compare values computed on the same number of rows.

    Cost is O(N²) memory and O(N² (p + q)) time, so when N > ``max_samples`` the statistic is computed on the rows
    ``np.sort(np.random.default_rng(seed).choice(N, max_samples, replace=False))`` (the same rows of a and b).

    Args:
        a: (N, ...) float samples of the first variable, e.g. anatomy maps s (N, C, H, W); trailing axes are
            flattened to (N, p) and a (N,) array is one feature.
        b: (N, ...) float samples of the second variable, e.g. modality codes z (N, n_z); flattened likewise.
        max_samples: most rows used; >= 2.
        seed: seed of the row subsample (used only when N > max_samples).

    Returns:
        dCor in [0, 1].

    Raises:
        SDNetError: fewer than 2 rows, different row counts, an empty or non-finite input, or max_samples < 2.
    """
    import dcor  # imported here: dcor imports numba, slow to load and needed by this function only

    caller = "distance_correlation"
    if max_samples < 2:
        raise SDNetError(f"{caller}: max_samples must be >= 2, got {max_samples}")
    flat = []
    for name, x in (("a", a), ("b", b)):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] == 0:
            raise SDNetError(f"{caller}: {name} must be a non-empty (N, ...) array, got shape {x.shape}")
        flat.append(_check_codes(name, x.reshape(x.shape[0], -1), caller))
    a2, b2 = flat
    n = a2.shape[0]
    if b2.shape[0] != n:
        raise SDNetError(f"{caller}: length mismatch: a has {n} rows but b has {b2.shape[0]}")
    if n < 2:
        raise SDNetError(f"{caller}: needs at least 2 rows, got {n}")
    if n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
        a2, b2 = a2[rows], b2[rows]
    # NAIVE: the exact O(N²) formula for any dimension (AUTO would switch to a numba-compiled O(N log N) algorithm
    # for 1-D inputs, same value, slow first compilation).
    value = dcor.distance_correlation(a2, b2, method=dcor.DistanceCovarianceMethod.NAIVE)
    return float(np.clip(value, 0.0, 1.0))


# ---------------------------------------------------------------------------------------------------------------------
# §5.6 factor sizes (Burgess et al., 2018)


@dataclass(frozen=True)
class FactorStatistics:
    """Per-dimension statistics of the approximate posterior q(z|x) = N(μ, σ²) over a data set (paper §5.6).

    Attributes:
        mean_variance: (n_z,) E_x[σ²]: the posterior variance averaged over the data. Small = the dimension is
            informative (high capacity); ≈ 1 with μ ≈ 0 = the posterior equals the prior, the dimension is unused.
        mu_variance: (n_z,) Var_x[μ]: how much the posterior mean moves across the data (population variance).
        kl: (n_z,) E_x[KL(N(μ, σ²) || N(0, 1))] in nats; 0 for an unused dimension.
        n_samples: number of codes N the statistics were computed over.
    """

    mean_variance: tuple[float, ...]
    mu_variance: tuple[float, ...]
    kl: tuple[float, ...]
    n_samples: int

    def ranked_dimensions(self) -> tuple[int, ...]:
        """Dimension indices from most to least informative: ascending :attr:`mean_variance`, ties by index."""
        return tuple(int(d) for d in np.argsort(np.asarray(self.mean_variance), kind="stable"))


def factor_statistics(mu: np.ndarray, logvar: np.ndarray) -> FactorStatistics:
    """Informativeness of each z dimension from the encoder's posterior parameters (paper §5.6, Burgess et al.).

    The paper ranks dimensions by their average posterior variance (smaller = more informative). The KL per
    dimension, 0.5 (μ² + σ² - log σ² - 1) averaged over the data, is Burgess et al.'s capacity measure.

    Args:
        mu: (N, n_z) float posterior means μ.
        logvar: (N, n_z) float posterior log-variances log σ², same shape.

    Returns:
        The per-dimension statistics.

    Raises:
        SDNetError: wrong ndim, mismatched shapes, or non-finite values.
    """
    caller = "factor_statistics"
    mu = _check_codes("mu", mu, caller)
    logvar = _check_codes("logvar", logvar, caller)
    if mu.shape != logvar.shape:
        raise SDNetError(f"{caller}: shape mismatch: mu {mu.shape} vs logvar {logvar.shape}")
    variance = np.exp(logvar)  # (N, n_z)
    kl = 0.5 * (mu**2 + variance - logvar - 1.0)  # (N, n_z)
    return FactorStatistics(
        mean_variance=tuple(float(v) for v in variance.mean(axis=0)),
        mu_variance=tuple(float(v) for v in mu.var(axis=0)),
        kl=tuple(float(v) for v in kl.mean(axis=0)),
        n_samples=int(mu.shape[0]),
    )
