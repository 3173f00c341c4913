"""The iBUG-68 tables agree with the geometry of a real face."""

from __future__ import annotations

import numpy as np
import pytest

from headpose_ros.core.landmarks import IBUG68, LandmarkScheme


def read_pts(path) -> np.ndarray:
    lines = path.read_text().splitlines()
    start = lines.index("{") + 1
    return np.array([[float(v) for v in line.split()] for line in lines[start : start + 68]])


def test_mirroring_a_real_face_maps_each_point_onto_its_partner(data_300w) -> None:
    # Mirror a real annotated face horizontally, then apply the permutation: the mirrored face
    # must look like a face again, i.e. the subject's right eye is again on the image left.
    points = read_pts(next((data_300w / "helen_test").glob("*.pts")))
    mirrored = points.copy()
    mirrored[:, 0] = -mirrored[:, 0]
    relabelled = mirrored[list(IBUG68.flip_permutation)]
    assert relabelled[36, 0] < relabelled[45, 0]
    assert relabelled[0, 0] < relabelled[16, 0]
    assert relabelled[48, 0] < relabelled[54, 0]


def test_self_symmetric_points_lie_on_the_midline() -> None:
    fixed = [i for i, j in enumerate(IBUG68.flip_permutation) if i == j]
    assert fixed == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def test_eye_distances_on_a_synthetic_face() -> None:
    points = np.zeros((68, 2))
    points[36:42] = [-30.0, 0.0]
    points[42:48] = [30.0, 0.0]
    points[36] = [-45.0, 0.0]
    points[45] = [45.0, 0.0]
    assert IBUG68.interocular_distance(points) == pytest.approx(90.0)
    assert IBUG68.interpupil_distance(points) == pytest.approx(65.0)  # (45 + 5 * 30) / 6 * 2
    assert IBUG68.interocular_distance(np.stack([points, 2 * points])) == pytest.approx([90, 180])


def test_a_table_that_is_not_an_involution_is_rejected() -> None:
    swapped = list(range(68))
    swapped[0], swapped[1], swapped[2] = 1, 2, 0
    with pytest.raises(ValueError, match="own inverse"):
        LandmarkScheme("bad", 68, tuple(swapped), (), (), 0, 1, (), (), (), ())
