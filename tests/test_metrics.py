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


def test_slice_average_counts_empty_slices_as_the_authors_do():
    """Slices with the class in neither prediction nor truth score 1 (the authors' smoothed Dice), or are skipped
    with empty_score=nan; a slice with a false positive scores 0 either way."""
    target = np.zeros((4, 3, 3), dtype=int)
    pred = np.zeros_like(target)
    target[0, 0, 0] = pred[0, 0, 0] = 1  # slice 0: perfect
    pred[1, 1, 1] = 1  # slice 1: false positive
    # slices 2 and 3: empty in both
    assert slice_averaged_dice(pred, target, 2)[0] == pytest.approx((1 + 0 + 1 + 1) / 4)
    assert slice_averaged_dice(pred, target, 2, empty_score=float("nan"))[0] == pytest.approx(0.5)
    assert slice_averaged_dice(np.zeros_like(target), np.zeros_like(target), 2)[0] == 1.0


def test_hd95_known_shift_in_mm_and_pixels():
    from sdnet.metrics import hd95_per_class

    target = np.zeros((3, 20, 20), dtype=int)
    target[:, 5:10, 5:10] = 1
    pred = np.zeros_like(target)
    pred[:, 6:11, 5:10] = 1  # one row down
    assert hd95_per_class(pred, target, 2, spacing=(2.0, 1.0, 8.0))[0] == pytest.approx(2.0)
    assert hd95_per_class(pred, target, 2)[0] == pytest.approx(1.0)
    assert hd95_per_class(pred, pred, 2)[0] == 0.0
    assert np.isnan(hd95_per_class(np.zeros_like(target), target, 2)[0])


def test_summary_of_a_never_predicted_structure_is_nan_without_warning() -> None:
    import warnings

    from sdnet.evaluation import EvaluationReport, VolumeScore

    nan = float("nan")
    vols = [VolumeScore(subject_id=f"s{i}", phase=0, dice_3d=np.array([0.0, 0.5]), dice_slice=np.array([0.0, 0.5]),
                        hd95=np.array([nan, 2.0 + i])) for i in range(2)]
    report = EvaluationReport(class_names=["RV", "LV"], volumes=vols, hd95_unit="px")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        means, _ = report.mean_std("hd95")
    assert np.isnan(means[0]) and means[1] == 2.5
