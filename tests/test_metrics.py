import numpy as np
import pytest

from sdnet.metrics import dice_per_class, slice_averaged_dice


def test_dice_per_class_known_values():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    target = np.array([[0, 1, 0], [2, 0, 0]])
    d = dice_per_class(pred, target, 4)
    assert d[0] == pytest.approx(2 * 1 / 3)  # class 1
    assert d[1] == pytest.approx(2 * 1 / 3)  # class 2
    assert np.isnan(d[2])  # class 3 absent from both


def test_missing_class_scores_zero_and_slice_average():
    pred = np.zeros((2, 2, 2), dtype=int)
    target = np.zeros((2, 2, 2), dtype=int)
    target[0, 0, 0] = 1
    pred[1] = 1
    target[1] = 1
    assert dice_per_class(pred[0], target[0], 2)[0] == 0.0
    assert slice_averaged_dice(pred, target, 2)[0] == pytest.approx(0.5)
    assert dice_per_class(pred, target, 2)[0] == pytest.approx(2 * 4 / (4 + 5))
