"""One frame's faces through the network: crop, MNN, heatmap decoding, re-crop, OR.

All faces of a frame go through the network in one batch. Each face's crop transform is
inverted once (:class:`FaceCrop`) and its heatmaps decoded once per network run; the faces
that the crop missed are cropped again and re-run together, and the OR refines the final
heatmaps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from headpose_ros.core.config import InferenceConfig
from headpose_ros.core.crop import (
    apply_affine,
    crop_affine,
    crop_images,
    invert_affine,
    square_box_from_face_box,
    to_network_input,
)
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.inference import ModelRunner, NetworkOutputs, load_model
from headpose_ros.core.occlusion_regressor import OcclusionRegressor, initial_shape

__all__ = [
    "RECROP_SCALE",
    "RECROP_SHIFT",
    "FaceBatch",
    "FaceBatchRunner",
    "FaceCrop",
    "face_crop",
]

#: A face whose landmark box differs from its crop's box by more than this factor in size, or
#: this share of its side in position, is cropped again and re-run in the same frame.
RECROP_SCALE = 1.2
RECROP_SHIFT = 0.15


@dataclass(frozen=True)
class FaceCrop:
    """Where one face is cropped from: its box, the crop transform both ways, its side.

    ``box`` is the landmark-convention box the crop was made from; ``affine`` maps image to
    crop pixels and ``to_image`` back; ``side`` is the crop's side in image pixels.
    """

    box: np.ndarray
    affine: np.ndarray
    to_image: np.ndarray
    side: float
    cut_by_border: bool


def face_crop(
    box: np.ndarray, image_size: tuple[int, int], margin: float, input_size: int
) -> FaceCrop:
    """Crop of a face box (landmark-box convention); ValueError for a box without area."""
    x0, y0, x1, y1 = (float(v) for v in box)
    square = square_box_from_face_box(x0, y0, x1, y1, margin)
    half = square.side / 2.0
    width, height = image_size
    cut = (
        square.cx - half < 0
        or square.cy - half < 0
        or square.cx + half > width
        or square.cy + half > height
    )
    affine = crop_affine(square, input_size)
    return FaceCrop(
        np.asarray(box, dtype=np.float64), affine, invert_affine(affine), square.side, cut
    )


@dataclass(frozen=True)
class FaceBatch:
    """A frame's network results, row ``i`` for ``crops[i]``.

    ``pose_ed`` is the network's pose vector (float64). ``landmarks`` are image pixels
    (OR-refined when an OR is loaded), ``visibility`` is clipped to [0, 1], and ``presence``
    is each face's mean heatmap peak as a multiple of a flat map's value: high where the
    network sees a clear face, low on a blank or noisy crop; the three are ``None`` in
    encoder-only mode, where ``track_points`` (what the tracker follows, otherwise the
    landmarks) is the mean face placed by ``p^AE``, the pose trained for exactly this
    alignment. ``finite`` is False for rows with NaN or infinite outputs. ``crops`` are the
    final crops (re-cropped faces have their new one). ``presence_thresholds`` are the model's
    (min, clear) presence thresholds from its manifest.
    """

    crops: list[FaceCrop]
    pose_ed: np.ndarray
    landmarks: np.ndarray | None
    visibility: np.ndarray | None
    presence: np.ndarray | None
    track_points: np.ndarray
    finite: np.ndarray
    recropped: int
    presence_thresholds: tuple[float, float]

    def shows_a_face(self, index: int, min_visibility: float) -> tuple[bool, bool, str]:
        """Whether row ``index`` shows a face, whether clearly, and the figures that say so.

        Encoder-only outputs cannot tell (there are no heatmaps): a face, never a clear one.
        """
        if self.landmarks is None:
            return True, False, "p^AE does not place a plausible face"
        visibility, presence = float(self.visibility[index].mean()), float(self.presence[index])
        least, clearly = self.presence_thresholds
        found = visibility >= min_visibility and presence >= least
        clear = found and presence >= clearly
        return found, clear, f"mean visibility {visibility:.2f}, presence {presence:.0f}"


class FaceBatchRunner:
    """The loaded model (MNN or encoder, and the OR) applied to a frame's face crops."""

    def __init__(self, config: InferenceConfig) -> None:
        """Load and check the model files (ModelFileError names a bad one), then warm up."""
        self.model = load_model(config)
        self.manifest = self.model.manifest
        self.presence_thresholds = (
            self.manifest.face_presence["min"],
            self.manifest.face_presence["clear"],
        )
        self.runner = ModelRunner(self.model, config)
        self.regressor: OcclusionRegressor | None = None
        if config.use_or and not config.encoder_only and "or" in self.model.files:
            self.regressor = OcclusionRegressor.load(
                self.model.files["or"], self.manifest.mean_face_m
            )
        # One dummy batch (and OR call), so the first real frame is not slowed by lazy init.
        size = self.manifest.input_size
        outputs = self.runner.run(np.zeros((1, 3, size, size), dtype=np.float32))
        if self.regressor is not None and outputs.heatmaps is not None:
            self.regressor.refine(
                outputs.heatmaps, outputs.pose_ae, outputs.visibility, float(size)
            )

    def run(
        self,
        image: np.ndarray,
        crops: list[FaceCrop],
        lap: Callable[[str], None],
        from_boxes: Sequence[bool] = (),
    ) -> FaceBatch:
        """Network, re-crop of the faces the crop missed, then the OR on the final heatmaps.

        ``image`` is the validated HxWx3 uint8 frame; ``lap(stage)`` is called after the
        crop, mnn, decode and or stages for the caller's timings. ``from_boxes[i]`` says that
        crop ``i`` was made from a box (a new face's detection), not from landmarks: such a
        crop is always run once more around its own landmarks, the crop the network was
        trained on (on the 300-W validation faces: NME 4.54% -> 4.39%, failures 5.4% -> 3.5%).
        """
        crops = list(crops)
        outputs, landmarks, presence = self._infer(image, crops, lap)
        pose_ed = outputs.pose_ed.astype(np.float64)
        finite = np.all(np.isfinite(pose_ed), axis=1)
        if landmarks is None:
            size = float(self.manifest.input_size)
            rigid = [
                initial_shape(pose, self.manifest.mean_face_m, size)[0] for pose in outputs.pose_ae
            ]
            points = self._to_image(np.stack(rigid), crops)
            return FaceBatch(
                crops, pose_ed, None, None, None, points, finite, 0, self.presence_thresholds
            )
        redo = self._recrops(image, crops, landmarks, from_boxes)
        if redo:
            rows = [index for index, _ in redo]
            again, landmarks_again, presence_again = self._infer(
                image, [crop for _, crop in redo], lap
            )
            merged = {
                name: np.array(getattr(outputs, name))
                for name in NetworkOutputs.__dataclass_fields__
            }
            for name, values in merged.items():
                values[rows] = getattr(again, name)
            outputs = NetworkOutputs(**merged)
            pose_ed[rows] = again.pose_ed
            finite = np.all(np.isfinite(pose_ed), axis=1)
            landmarks[rows], presence[rows] = landmarks_again, presence_again
            for index, crop in redo:
                crops[index] = crop
        if self.regressor is not None:
            refined = self.regressor.refine(
                outputs.heatmaps,
                outputs.pose_ae,
                outputs.visibility,
                float(self.manifest.input_size),
            )
            good = np.all(np.isfinite(refined), axis=(1, 2))
            landmarks[good] = refined[good]
            lap("or")
        landmarks = self._to_image(landmarks, crops)
        visibility = np.clip(outputs.visibility.astype(np.float64), 0.0, 1.0)
        finite &= np.all(np.isfinite(landmarks), axis=(1, 2)) & np.all(
            np.isfinite(visibility), axis=1
        )
        return FaceBatch(
            crops,
            pose_ed,
            landmarks,
            visibility,
            presence,
            landmarks,
            finite,
            len(redo),
            self.presence_thresholds,
        )

    @staticmethod
    def _to_image(crop_points: np.ndarray, crops: list[FaceCrop]) -> np.ndarray:
        """Each face's crop-pixel points ``(N, L, 2)`` in image pixels."""
        return np.stack(
            [
                apply_affine(points, crop.to_image)
                for points, crop in zip(crop_points, crops, strict=True)
            ]
        )

    def _infer(
        self, image: np.ndarray, crops: list[FaceCrop], lap: Callable[[str], None]
    ) -> tuple[NetworkOutputs, np.ndarray | None, np.ndarray | None]:
        """Crop, run and decode a batch: each face's heatmaps decoded exactly once."""
        size = self.manifest.input_size
        pixels = crop_images(image, [crop.affine for crop in crops], size)
        batch = to_network_input(pixels, self.manifest.normalisation)
        lap("crop")
        outputs = self.runner.run(batch)
        lap("mnn")
        if outputs.heatmaps is None:
            return outputs, None, None
        landmarks, peaks = decode_heatmaps(outputs.heatmaps, float(size))
        presence = peaks.mean(axis=1) * float(np.prod(outputs.heatmaps.shape[2:]))
        lap("decode")
        return outputs, landmarks, presence

    def _recrops(
        self,
        image: np.ndarray,
        crops: list[FaceCrop],
        crop_landmarks: np.ndarray,
        from_boxes: Sequence[bool],
    ) -> list[tuple[int, FaceCrop]]:
        """Find the faces whose landmarks say the crop missed them, and their new crops.

        After a fast move or zoom the crop taken from last frame's landmarks shows the face
        off-centre or at the wrong scale, and the network's answer is poor. When this frame's
        landmark box differs from the crop's box by more than :data:`RECROP_SCALE` in size or
        :data:`RECROP_SHIFT` of its side in position, the face is cropped around the new
        landmarks and run once more. Steady tracking never triggers it; a crop made from a
        box (``from_boxes``) always does.
        """
        redo: list[tuple[int, FaceCrop]] = []
        image_size = (image.shape[1], image.shape[0])
        for index, crop in enumerate(crops):
            points = apply_affine(crop_landmarks[index], crop.to_image)
            if not np.all(np.isfinite(points)):
                continue
            new_box = np.concatenate([points.min(axis=0), points.max(axis=0)])
            old_box = crop.box
            old_side = max(float(np.mean(old_box[2:] - old_box[:2])), 1e-6)
            ratio = float(np.mean(new_box[2:] - new_box[:2])) / old_side
            shift = float(
                np.linalg.norm((new_box[:2] + new_box[2:] - old_box[:2] - old_box[2:]) / 2)
            )
            if (
                (index < len(from_boxes) and from_boxes[index])
                or abs(np.log(max(ratio, 1e-6))) > np.log(RECROP_SCALE)
                or shift > RECROP_SHIFT * old_side
            ):
                try:
                    again = face_crop(
                        new_box, image_size, self.manifest.crop_margin, self.manifest.input_size
                    )
                except ValueError:
                    continue  # the landmarks collapsed: keep the crop that made them
                redo.append((index, again))
        return redo
