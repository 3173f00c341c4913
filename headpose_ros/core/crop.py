"""Face crop and network-input preparation, shared by training and inference.

Training imports these functions instead of re-implementing them, so the crop a model was
trained on is, by construction, the crop it sees on the robot (the 3DDFA_V2 lesson).

Coordinates: image pixels, origin at the top-left, x to the right, y down. A crop transform is
a 2x3 affine matrix ``A`` mapping image coordinates to crop coordinates,
``crop_xy = A @ [x, y, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "BOX_MARGIN",
    "Normalisation",
    "SquareBox",
    "apply_affine",
    "crop_affine",
    "crop_image",
    "crop_images",
    "invert_affine",
    "square_box_from_face_box",
    "square_box_from_landmarks",
    "to_network_input",
]

#: The paper's crop rule: the face box grows by 30% of its size on each side.
BOX_MARGIN = 0.3


@dataclass(frozen=True)
class SquareBox:
    """A square region of the image: centre and side length, in pixels."""

    cx: float
    cy: float
    side: float


@dataclass(frozen=True)
class Normalisation:
    """How uint8 crop pixels become network input; stored in the model manifest.

    ``channel_order`` is the order the network expects ("RGB" or "BGR"); images inside the
    core are always BGR (OpenCV's order), so "RGB" means the channels are swapped.
    ``input = (pixel / 255 - mean) / std`` per channel, in the network's channel order.
    """

    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        """Reject layouts the preprocessing cannot honour, at load time rather than per frame."""
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need three values, one per channel")
        if any(not np.isfinite(s) or s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive and finite, got {self.std}")


def square_box_from_face_box(
    x0: float, y0: float, x1: float, y1: float, margin: float = BOX_MARGIN
) -> SquareBox:
    """Apply the paper's crop rule to a detector or annotation box.

    The box is enlarged by ``margin`` of its width and height on each side, then made square
    with the enlarged *height* as side, centred on the enlarged box (paper-notes.md, "Crop").
    """
    width, height = x1 - x0, y1 - y0
    if not (width > 0 and height > 0):
        raise ValueError(f"face box must have positive size, got {(x0, y0, x1, y1)}")
    return SquareBox(cx=(x0 + x1) / 2.0, cy=(y0 + y1) / 2.0, side=height * (1.0 + 2.0 * margin))


def square_box_from_landmarks(points: np.ndarray, margin: float = BOX_MARGIN) -> SquareBox:
    """Crop box for a face known by its landmarks (training labels, or a tracked face).

    The landmarks' bounding rectangle plays the role of the face box, as the paper does for
    300W-LP/AFLW2000-3D; only finite points count.
    """
    finite = points[np.all(np.isfinite(points), axis=1)]
    if len(finite) < 2:
        raise ValueError("need at least two finite landmarks to place a crop")
    (x0, y0), (x1, y1) = finite.min(axis=0), finite.max(axis=0)
    return square_box_from_face_box(float(x0), float(y0), float(x1), float(y1), margin)


def crop_affine(box: SquareBox, out_size: int, rotation_rad: float = 0.0) -> np.ndarray:
    """Build the 2x3 transform taking image pixels into an ``out_size`` square crop of ``box``.

    ``rotation_rad`` turns the crop window so that the face appears rotated by that angle
    counter-clockwise on screen (y down) in the crop, i.e. by positive roll; training uses it
    for in-plane rotation augmentation, inference leaves it at zero.
    """
    scale = out_size / box.side
    cos, sin = np.cos(rotation_rad) * scale, np.sin(rotation_rad) * scale
    half = out_size / 2.0
    # crop = R*s*(p - c) + half, with R rotating image vectors by -rotation.
    return np.array(
        [
            [cos, sin, half - cos * box.cx - sin * box.cy],
            [-sin, cos, half + sin * box.cx - cos * box.cy],
        ],
        dtype=np.float64,
    )


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine transform (crop pixels back to image pixels)."""
    return cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a 2x3 affine transform; NaNs stay NaN."""
    points = np.asarray(points, dtype=np.float64)
    return points @ affine[:, :2].T + affine[:, 2]


def crop_image(
    image_bgr: np.ndarray,
    affine: np.ndarray,
    out_size: int,
    border_mode: int = cv2.BORDER_CONSTANT,
) -> np.ndarray:
    """Warp the crop out of the image; parts outside the image are black.

    Black padding is what inference does when a face is cut by the image border, and what
    training does with whole photographs. Training passes ``cv2.BORDER_REPLICATE`` only for
    tight face crops (AFLW) whose border is not a real image border.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}"
        )
    return crop_images(image_bgr, [affine], out_size, border_mode)[0]


def crop_images(
    image_bgr: np.ndarray,
    affines: list[np.ndarray],
    out_size: int,
    border_mode: int = cv2.BORDER_CONSTANT,
) -> np.ndarray:
    """Every face's crop of one frame, ``(N, out_size, out_size, 3)``, as :func:`crop_image`.

    The frame is not checked again here: the estimator validates each frame once, on entry
    (``image_codec.prepare_image``), and crops all its faces from it.
    """
    crops = np.empty((len(affines), out_size, out_size, 3), dtype=np.uint8)
    for crop, affine in zip(crops, affines, strict=True):
        cv2.warpAffine(
            image_bgr,
            affine,
            (out_size, out_size),
            dst=crop,
            flags=cv2.INTER_LINEAR,
            borderMode=border_mode,
            borderValue=(0, 0, 0),
        )
    return crops


def to_network_input(crops_bgr: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """Stack of uint8 BGR crops (N, H, W, 3) -> float32 NCHW tensor the network expects.

    Channels are reordered and transposed while still uint8, then converted once and scaled
    in place: about 20x faster than normalising in NHWC float (this runs on every frame).
    """
    if crops_bgr.ndim != 4 or crops_bgr.shape[3] != 3:
        raise ValueError(f"expected (N, H, W, 3) crops, got {crops_bgr.shape}")
    order = [2, 1, 0] if normalisation.channel_order == "RGB" else [0, 1, 2]
    tensor = crops_bgr.transpose(0, 3, 1, 2)[:, order].astype(np.float32, order="C")
    std = np.asarray(normalisation.std, dtype=np.float32).reshape(1, 3, 1, 1)
    mean = np.asarray(normalisation.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    tensor *= np.float32(1.0 / 255.0) / std
    tensor -= mean / std
    return tensor
