"""Metric 6-DoF head pose from landmarks and camera intrinsics.

With intrinsics, PnP of the *visible* landmarks against the manifest's mean 3D face gives the
head's position and orientation in the camera optical frame (metres). Occluded landmarks are
left out: the MNN+OR still estimates where they are, but those positions are guesses and would
bias the solution. Without valid intrinsics only the network's orientation is available and
results are flagged as not metric.

Intrinsics follow sensor_msgs/CameraInfo: the distortion models ROS cameras send
(:data:`DISTORTION_MODELS`: plumb_bob, rational_polynomial, equidistant fisheye), binning and
a region of interest, and the image size they were calibrated for. Anything else is refused
with the reason (:class:`IntrinsicsError`) rather than used as something it is not, and an
image of another size than the calibration is only accepted when it is a pure resize of it
(:meth:`CameraModel.for_image`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from headpose_ros.core.config import PoseConfig
from headpose_ros.core.crop import apply_affine
from headpose_ros.core.geometry import CROP_FOCAL_FACTOR, euler_to_matrix
from headpose_ros.core.landmarks import LandmarkScheme

__all__ = [
    "DISTORTION_MODELS",
    "CameraModel",
    "HeadPose",
    "IntrinsicsError",
    "MetricPose",
    "camera_from_intrinsics",
    "fit_camera",
    "head_origin_px",
    "estimate_head_pose",
    "network_position",
    "nominal_camera",
    "orientation_from_network",
    "ray_rotation",
    "solve_metric_pose",
]


class IntrinsicsError(ValueError):
    """Camera intrinsics that cannot be used; the message says why.

    ``reason`` is a short stable key for counting: ``not_finite``, ``bad_matrix``,
    ``unsupported_model``, ``distortion_count``, ``bad_roi``, ``size_mismatch``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


#: Distortion models of sensor_msgs/CameraInfo this module applies, with the numbers of
#: coefficients each takes (plumb_bob: k1 k2 p1 p2 [k3]; rational_polynomial adds k4 k5 k6;
#: equidistant is OpenCV's fisheye model, k1 k2 k3 k4).
DISTORTION_MODELS = {"plumb_bob": (0, 4, 5), "rational_polynomial": (8,), "equidistant": (4,)}


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics ``K`` (3x3), distortion coefficients and model, for one image size.

    ``width``/``height`` is the image size ``K`` describes (0: unknown, any size accepted).
    """

    matrix: np.ndarray
    distortion: np.ndarray
    model: str = "plumb_bob"
    width: int = 0
    height: int = 0

    def normalised(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) normalised image coordinates (x/z, y/z of the ray) of pixels, undistorted."""
        points = np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
        if self.model == "equidistant":
            return cv2.fisheye.undistortPoints(points, self.matrix, self.distortion).reshape(-1, 2)
        return cv2.undistortPoints(points, self.matrix, self.distortion).reshape(-1, 2)

    def project(self, points: np.ndarray, rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
        """(N, 2) pixels of (N, 3) points seen from the pose ``rvec``, ``tvec`` (distorted)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 1, 3)
        if self.model == "equidistant":
            projected, _ = cv2.fisheye.projectPoints(
                points, rvec, tvec, self.matrix, self.distortion
            )
        else:
            projected, _ = cv2.projectPoints(points, rvec, tvec, self.matrix, self.distortion)
        return projected.reshape(-1, 2)

    def bearing(self, pixel: np.ndarray) -> np.ndarray:
        """Return the unit ray in the optical frame through an image pixel (distortion removed)."""
        x, y = self.normalised(pixel)[0]
        ray = np.array([x, y, 1.0])
        return ray / np.linalg.norm(ray)

    def for_image(self, width: int, height: int) -> tuple[CameraModel, str]:
        """Return these intrinsics for a ``width`` x ``height`` image, and a note if changed.

        The calibration's own size (or an unknown one) is used as it is. An image of another
        size is accepted only when it is a pure resize (one scale for x and y, up to rounding):
        K is then scaled, and the note says so. Anything else raises ``size_mismatch``: a K
        for another resolution, crop or aspect ratio would give a wrong metric position.
        """
        if not (self.width and self.height) or (width, height) == (self.width, self.height):
            return self, ""
        sx, sy = width / self.width, height / self.height
        if abs(self.width * sy - width) >= 1.0 or abs(self.height * sx - height) >= 1.0:
            raise IntrinsicsError(
                f"camera_info is for {self.width}x{self.height} images, this image is "
                f"{width}x{height} (not a resize of it): position not metric",
                "size_mismatch",
            )
        # Pixel centres: x' + 0.5 = (x + 0.5) * s, as OpenCV's resize maps them.
        scale = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        scaled = replace(self, matrix=scale @ self.matrix, width=width, height=height)
        note = (
            f"camera_info is for {self.width}x{self.height} images, this image is "
            f"{width}x{height}: a resize by {sx:.4g}, K scaled to match"
        )
        return scaled, note


def head_origin_px(
    landmarks: np.ndarray | None, box: np.ndarray, scheme: LandmarkScheme
) -> np.ndarray:
    """Image pixel of the head frame's origin: between the eyes (the box centre if unknown)."""
    if landmarks is None:
        return (np.asarray(box[:2], float) + np.asarray(box[2:], float)) / 2.0
    return landmarks[list(scheme.right_eye) + list(scheme.left_eye)].mean(axis=0)


def fit_camera(
    camera: CameraModel | tuple[np.ndarray, np.ndarray], width: int, height: int
) -> tuple[CameraModel, str]:
    """Validate ``camera`` (a :class:`CameraModel` or raw ``(K, D)``) for a width x height image.

    Returns the intrinsics to use and a note when they were scaled for a resized image
    (:meth:`CameraModel.for_image`); raises :class:`IntrinsicsError` (or ``TypeError`` /
    ``ValueError`` for a malformed pair) when they cannot be used.
    """
    if not isinstance(camera, CameraModel):
        matrix, distortion = camera
        camera = camera_from_intrinsics(matrix, distortion)
    return camera.for_image(width, height)


def camera_from_intrinsics(
    k: np.ndarray,
    distortion: np.ndarray | None = None,
    model: str | None = None,
    *,
    size: tuple[int, int] = (0, 0),
    binning: tuple[int, int] = (0, 0),
    roi: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> CameraModel:
    """Build a validated :class:`CameraModel` (the fields of sensor_msgs/CameraInfo).

    ``k``: 3x3 (or 9 values, row-major) for the full ``size`` (width, height; 0 = unknown).
    ``model``: a :data:`DISTORTION_MODELS` name; ``None`` infers plumb_bob or
    rational_polynomial from the number of coefficients, and an empty name is accepted only
    with no distortion at all. ``binning`` (0 or 1 = none) and ``roi`` (x_offset, y_offset,
    width, height; all zero = the full image) describe the image the driver actually sends;
    K and the size are converted to it, as image_geometry does.

    Raises :class:`IntrinsicsError` with the reason: an all-zero K is what an uncalibrated
    camera driver publishes in CameraInfo, and NaN values come from broken calibration files.
    """
    matrix = np.asarray(k, dtype=np.float64)
    if matrix.size != 9:
        raise IntrinsicsError(f"K must have 9 values, got {matrix.size}", "bad_matrix")
    matrix = matrix.reshape(3, 3)
    coefficients = (
        np.zeros(0) if distortion is None else np.asarray(distortion, dtype=np.float64).ravel()
    )
    if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(coefficients)):
        raise IntrinsicsError("camera intrinsics contain NaN or infinite values", "not_finite")
    if matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
        raise IntrinsicsError(
            f"focal lengths must be positive, got fx={matrix[0, 0]}, fy={matrix[1, 1]}",
            "bad_matrix",
        )
    model = _distortion_model(model, coefficients)
    width, height = (int(v) for v in size)
    bx, by = (max(int(v), 1) for v in binning)
    x0, y0, roi_width, roi_height = (int(v) for v in roi)
    if roi_width == 0 or roi_height == 0:  # CameraInfo: a zero-size ROI is the full image
        x0, y0, roi_width, roi_height = 0, 0, width, height
    elif (
        min(x0, y0) < 0
        or (width and x0 + roi_width > width)
        or (height and y0 + roi_height > height)
    ):
        raise IntrinsicsError(
            f"region of interest {roi_width}x{roi_height} at ({x0}, {y0}) leaves the "
            f"{width}x{height} image",
            "bad_roi",
        )
    to_image = np.array([[1.0 / bx, 0.0, -x0 / bx], [0.0, 1.0 / by, -y0 / by], [0.0, 0.0, 1.0]])
    return CameraModel(
        matrix=to_image @ matrix,
        distortion=coefficients,
        model=model,
        width=roi_width // bx,
        height=roi_height // by,
    )


def _distortion_model(name: str | None, coefficients: np.ndarray) -> str:
    """Return the model ``coefficients`` are read with, or raise naming what is wrong."""
    if name is None:
        name = "rational_polynomial" if coefficients.size == 8 else "plumb_bob"
    elif name == "" and not np.any(coefficients):
        name = "plumb_bob"  # no model and nothing to distort with: an ideal pinhole
    if name not in DISTORTION_MODELS:
        raise IntrinsicsError(
            f"distortion model {name!r} is not supported (supported: "
            f"{', '.join(DISTORTION_MODELS)}): position not metric",
            "unsupported_model",
        )
    if coefficients.size not in DISTORTION_MODELS[name]:
        counts = " or ".join(str(c) for c in DISTORTION_MODELS[name])
        raise IntrinsicsError(
            f"distortion model {name} takes {counts} coefficients, got {coefficients.size}",
            "distortion_count",
        )
    return name


@dataclass(frozen=True)
class MetricPose:
    """PnP result: head frame in the optical frame, and how well it explains the landmarks."""

    rotation: np.ndarray
    translation: np.ndarray
    reprojection_error_px: float
    points_used: int


def solve_metric_pose(
    landmarks_px: np.ndarray,
    visibility: np.ndarray,
    mean_face_m: np.ndarray,
    camera: CameraModel,
    visibility_threshold: float = 0.5,
    min_points: int = 6,
) -> MetricPose | str:
    """Head pose in the camera frame, or a short reason why it could not be solved.

    SQPnP finds the global minimum of the reprojection error, so it needs no initial guess and
    cannot settle on the mirrored solution an iterative solver may reach from a bad start; it
    is also the fastest OpenCV solver for a few dozen points (about 0.04 ms here).
    """
    points = np.asarray(landmarks_px, dtype=np.float64)
    use = (np.asarray(visibility) >= visibility_threshold) & np.all(np.isfinite(points), axis=1)
    if int(use.sum()) < min_points:
        return f"only {int(use.sum())} visible landmarks (need {min_points})"
    image_points, object_points = points[use], mean_face_m[use]
    if float(np.ptp(image_points, axis=0).max()) < 1.0:
        return "landmarks collapse to a point"
    try:
        # On undistorted normalised points (K = I), the same for every distortion model; it is
        # what solvePnP does itself with a pinhole model's coefficients.
        ok, rvec, tvec = cv2.solvePnP(
            object_points,
            camera.normalised(image_points),
            np.eye(3),
            None,
            flags=cv2.SOLVEPNP_SQPNP,
        )
    except cv2.error as error:
        return f"PnP failed: {error.msg if hasattr(error, 'msg') else error}"
    if not ok or not np.all(np.isfinite(tvec)) or float(tvec[2, 0]) <= 0:
        return "PnP did not converge to a face in front of the camera"
    rotation, _ = cv2.Rodrigues(rvec)
    projected = camera.project(object_points, rvec, tvec)
    error = float(np.sqrt(np.mean(np.sum((projected - image_points) ** 2, axis=1))))
    return MetricPose(
        rotation=rotation,
        translation=tvec.reshape(3),
        reprojection_error_px=error,
        points_used=int(use.sum()),
    )


def orientation_from_network(pose_ed_deg: np.ndarray) -> np.ndarray:
    """Rotation matrix of the network's ``p^ED`` Euler angles (degrees)."""
    yaw, pitch, roll = np.deg2rad(np.asarray(pose_ed_deg[:3], dtype=np.float64))
    return euler_to_matrix(yaw, pitch, roll)


def ray_rotation(bearing: np.ndarray) -> np.ndarray:
    """Smallest rotation taking the optical axis (0, 0, 1) onto ``bearing``.

    The network's angles are relative to a camera looking straight at the face (the crop
    camera); turning that camera onto the real ray expresses them in the real optical frame.
    """
    b = np.asarray(bearing, dtype=np.float64)
    b = b / np.linalg.norm(b)
    if b[2] <= -1.0 + 1e-12:
        return np.diag([1.0, -1.0, -1.0])  # half turn; cannot happen for a visible face
    # Rodrigues for unit vectors a=(0,0,1), b: R = I + [v]x + [v]x^2 / (1 + a.b), v = a x b.
    v = np.array([-b[1], b[0], 0.0])
    cross = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + cross + cross @ cross / (1.0 + b[2])


def nominal_camera(width: int, height: int) -> CameraModel:
    """Make a stand-in pinhole (focal = longer image side, about 53 degrees across) for bearings.

    Used only to point a non-metric face's unit position vector roughly along its viewing ray
    when no intrinsics were given; such results are flagged as not metric.
    """
    focal = float(max(width, height))
    matrix = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    return CameraModel(matrix=matrix, distortion=np.zeros(0), width=width, height=height)


@dataclass(frozen=True)
class HeadPose:
    """One head's pose in the camera optical frame, as one frame's outputs give it.

    The orientation is kept in its two factors so that smoothing can filter the network's
    own estimate (``relative_rotation``, the head relative to facing the camera along its
    viewing ray) and turn it onto this frame's ray afterwards. ``pnp_failure`` says why PnP
    failed ("" when it was not tried or succeeded), for the caller to count.
    """

    relative_rotation: np.ndarray
    ray_rotation: np.ndarray
    position: np.ndarray
    metric: bool
    reprojection_error_px: float
    note: str
    pnp_failure: str = ""


def estimate_head_pose(
    pose_ed: np.ndarray,
    origin_px: np.ndarray,
    crop_to_image: np.ndarray,
    crop_side: float,
    crop_size: int,
    landmarks: np.ndarray | None,
    visibility: np.ndarray | None,
    mean_face_m: np.ndarray,
    camera: CameraModel | None,
    bearing_camera: CameraModel,
    settings: PoseConfig,
) -> HeadPose:
    """Orientation from ``p^ED`` on the viewing ray; position from PnP or the network.

    ``origin_px`` is the head origin's pixel (between the eyes); ``crop_to_image`` maps crop
    pixels to image pixels for a crop of ``crop_side`` image pixels and ``crop_size`` network
    pixels. Without a camera the position is the unit bearing of ``bearing_camera``.
    """
    bearing = bearing_camera.bearing(origin_px)
    relative, ray = orientation_from_network(pose_ed), ray_rotation(bearing)
    position, metric, error = bearing, False, float("nan")
    note, failure = "no camera intrinsics", ""
    if camera is not None and landmarks is not None:
        solved = solve_metric_pose(
            landmarks,
            visibility,
            mean_face_m,
            camera,
            settings.visibility_threshold,
            settings.min_pnp_points,
        )
        if isinstance(solved, MetricPose):
            position, metric, error, note = (
                solved.translation,
                True,
                solved.reprojection_error_px,
                "pnp",
            )
        else:
            failure, note = solved, f"pnp failed ({solved}); "
    if camera is not None and not metric:
        # Encoder-only mode, or PnP failed: the network's own translation still gives a
        # metric position, less precise than PnP of visible landmarks.
        fallback = network_position(pose_ed, crop_to_image, crop_side, crop_size, camera)
        if fallback is not None:
            position, metric = fallback, True
            note = f"{note if landmarks is not None else ''}network translation"
    return HeadPose(
        relative_rotation=relative,
        ray_rotation=ray,
        position=np.asarray(position, dtype=np.float64),
        metric=metric,
        reprojection_error_px=error,
        note=note,
        pnp_failure=failure,
    )


def network_position(
    pose_ed: np.ndarray,
    crop_to_image: np.ndarray,
    crop_side: float,
    crop_size: int,
    camera: CameraModel,
) -> np.ndarray | None:
    """Metric position from the network: the crop camera's translation seen by the camera.

    The crop camera has focal ``1.5 * S`` crop pixels for a crop of ``side`` image pixels,
    i.e. ``1.5 * side`` image pixels; the real camera's focal ``fx`` sees the same face at
    depth ``tz * fx / (1.5 * side)``, along the ray through the head origin's pixel.
    ``None`` when the translation puts the head behind the camera.
    """
    tx, ty, tz = pose_ed[3:6]
    if not tz > 1e-6:
        return None
    focal = CROP_FOCAL_FACTOR * crop_size
    crop_pixel = np.array([focal * tx / tz + crop_size / 2.0, focal * ty / tz + crop_size / 2.0])
    image_pixel = apply_affine(crop_pixel, crop_to_image)
    depth = tz * camera.matrix[0, 0] / (CROP_FOCAL_FACTOR * crop_side)
    bearing = camera.bearing(image_pixel)
    return bearing * depth / bearing[2]
