"""Face-free crops for the presence thresholds stay clear of the annotated face."""

import numpy as np

from headpose_ros.core.crop import SquareBox
from headpose_training.calibration import background_crops


def test_face_free_crops_never_include_the_face():
    image = np.zeros((400, 600, 3), np.uint8)
    image[150:250, 250:350] = 255  # the "face", inside its crop box
    face = SquareBox(300.0, 200.0, 160.0)
    crops = background_crops([image], [face], per_image=20, size=32, seed=0)
    assert crops.shape == (22, 32, 32, 3)  # 20 cut from the photo, one flat, one noise
    assert crops[:20].max() == 0  # none reaches the face's pixels
    assert len(np.unique(crops[20])) == 1 and crops[21].std() > 50
