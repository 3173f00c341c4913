"""The yaw report: MAE and slope per |yaw| bin, the figures that show compressed angles."""

import numpy as np
import pytest

from headpose_training.evaluate import yaw_report


def test_a_compressed_model_shows_in_the_slope_of_every_bin():
    labelled = np.linspace(-95, 95, 381)
    report = yaw_report(0.5 * labelled, labelled)  # reports a 60-degree turn as 30
    for name, low, high in (("[0,30)", 0, 30), ("[30,60)", 30, 60), ("[60,90]", 60, 90)):
        bin_report = report["by_abs_yaw"][name]
        selected = (np.abs(labelled) >= low) & (np.abs(labelled) <= high)
        assert bin_report["slope"] == pytest.approx(0.5)
        assert bin_report["mae"] == pytest.approx(
            0.5 * np.abs(labelled[selected]).mean(), rel=0.02
        )
    # Faces labelled beyond 90 degrees count overall, in no bin.
    binned = sum(b["count"] for b in report["by_abs_yaw"].values())
    assert report["overall"]["count"] == 381 > binned


def test_a_good_model_has_slope_one_and_small_error():
    rng = np.random.default_rng(0)
    labelled = rng.uniform(-90, 90, 3000)
    report = yaw_report(labelled + rng.normal(0, 2, 3000), labelled)
    assert report["overall"]["mae"] == pytest.approx(2 * np.sqrt(2 / np.pi), rel=0.1)
    for bin_report in report["by_abs_yaw"].values():
        assert bin_report["slope"] == pytest.approx(1.0, abs=0.05)


def test_errors_wrap_around_and_missing_faces_are_left_out():
    report = yaw_report(np.array([179.0, np.nan, 10.0]), np.array([-179.0, 20.0, 10.0]))
    assert report["overall"]["count"] == 2
    assert report["overall"]["mae"] == pytest.approx(1.0)
    assert report["by_abs_yaw"]["[30,60)"]["count"] == 0
