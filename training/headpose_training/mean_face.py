"""The 3D mean face: factorised from 300-W shapes, then given its depth by AFLW's yaw labels.

Every pose label, the alignment loss (2), the OR's initial shape and the node's metric position
project this face, so its depth matters as much as its outline. Rigid factorisation of 300-W
shapes (:func:`estimate_mean_face`) gets the outline right but not the depth: 300-W faces are
nearly frontal, and a face twice as deep seen at half the yaw looks the same (the bas-relief
ambiguity). Measured on AFLW, PnP against the factorised face reported half the labelled yaw
(slope 0.45 for |yaw| < 30). :func:`refine_mean_face` resolves the ambiguity with AFLW's yaw
labels: it first scales the depth to fit the labelled faces best (:func:`depth_scale`), then
alternates per-face PnP (AFLW faces with their yaw fixed to the label) and a linear
least-squares triangulation of the model over all faces, keeping the model symmetric, in the
head frame and at the biocular breadth.

The model has 70 points: iBUG's 68, then the right and left ear lobes that AFLW annotates,
which pin down yaw on profile faces where one eye and half the mouth are hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from headpose_ros.core.geometry import CROP_FOCAL_FACTOR, crop_camera_matrix, project_points
from headpose_ros.core.landmarks import IBUG68
from headpose_training.pose_labels import pose_from_landmarks, pose_with_yaw, rotation_of_pose

__all__ = [
    "BIOCULAR_BREADTH_MM",
    "EAR_LOBES",
    "MODEL_POINTS",
    "FaceObservation",
    "RefinedFace",
    "estimate_mean_face",
    "refine_mean_face",
    "to_head_frame",
]

#: Outer-eye-corner (ex-ex, "biocular breadth") distance of the mean adult face, in mm. Farkas,
#: "Anthropometry of the Head and Face" (1994), reports ex-ex of about 91 mm for North American
#: men and 87 mm for women; we use their mean, 89 mm, to give the face its scale.
BIOCULAR_BREADTH_MM = 89.0

#: Indices of the right and left ear lobes in the 70-point model.
EAR_LOBES = (68, 69)
MODEL_POINTS = IBUG68.num_points + len(EAR_LOBES)
_MODEL_FLIP = tuple(IBUG68.flip_permutation) + (EAR_LOBES[1], EAR_LOBES[0])


def estimate_mean_face(shapes: np.ndarray, biocular_mm: float = BIOCULAR_BREADTH_MM) -> np.ndarray:
    """Estimate a 68x3 mean face in the head frame (mm) by rigid factorisation of 2D shapes.

    Tomasi-Kanade: the centred 2F x 68 measurement matrix of F faces seen under scaled
    orthography has rank 3; its SVD gives motion and shape up to an affine ambiguity, fixed by
    asking every camera's two rows to be orthogonal and of equal norm (metric upgrade). The
    result is made left/right symmetric with the landmark flip permutation (so that yaw 0 means
    facing the camera and mirrored faces get exactly negated yaw), placed in the head frame of
    :mod:`headpose_ros.core.geometry` (origin between the eyes, x forward, y to the subject's
    left, z up) and scaled so that the outer eye corners are ``biocular_mm`` apart.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    centred = shapes - shapes.mean(axis=1, keepdims=True)
    # Normalise each face's size so large photos do not dominate the factorisation.
    centred /= np.sqrt((centred**2).sum(axis=(1, 2), keepdims=True))
    measurements = centred.transpose(0, 2, 1).reshape(-1, shapes.shape[1])
    u, s, vt = np.linalg.svd(measurements, full_matrices=False)
    motion, shape = u[:, :3] * np.sqrt(s[:3]), np.sqrt(s[:3])[:, None] * vt[:3]
    q_sym = _metric_upgrade(motion.reshape(-1, 2, 3))
    eigval, eigvec = np.linalg.eigh(q_sym)
    q = eigvec * np.sqrt(np.clip(eigval, 1e-12, None))
    points = (np.linalg.inv(q) @ shape).T
    return to_head_frame(points, biocular_mm)


def _metric_upgrade(cameras: np.ndarray) -> np.ndarray:
    """Symmetric Q Q^T making every 2x3 camera's rows orthogonal, of equal norm (least squares)."""

    def coefficients(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Linear coefficients of a^T L b in the six unknowns of symmetric L."""
        return np.stack(
            [
                a[:, 0] * b[:, 0],
                a[:, 0] * b[:, 1] + a[:, 1] * b[:, 0],
                a[:, 0] * b[:, 2] + a[:, 2] * b[:, 0],
                a[:, 1] * b[:, 1],
                a[:, 1] * b[:, 2] + a[:, 2] * b[:, 1],
                a[:, 2] * b[:, 2],
            ],
            axis=1,
        )

    rows_i, rows_j = cameras[:, 0], cameras[:, 1]
    system = np.concatenate(
        [coefficients(rows_i, rows_j), coefficients(rows_i, rows_i) - coefficients(rows_j, rows_j)]
    )
    # Fix the scale with a mean squared row norm of one.
    scale_row = coefficients(rows_i, rows_i).mean(axis=0, keepdims=True)
    system = np.concatenate([system, scale_row * len(cameras)])
    rhs = np.zeros(len(system))
    rhs[-1] = len(cameras)
    l_vec = np.linalg.lstsq(system, rhs, rcond=None)[0]
    a, b, c, d, e, f = l_vec
    return np.array([[a, b, c], [b, d, e], [c, e, f]])


def to_head_frame(points: np.ndarray, biocular_mm: float = BIOCULAR_BREADTH_MM) -> np.ndarray:
    """Rotate, mirror-fix, symmetrise and scale 68 or 70 model points into the head frame.

    Head frame of :mod:`headpose_ros.core.geometry`: origin between the eye centres, y from
    the right to the left eye, z up (from the mouth to the eyes, made orthogonal to y), x
    forward. Symmetrising with the flip permutation makes yaw 0 mean facing the camera and
    mirrored faces get exactly negated yaw. NaN points (an ear lobe not yet triangulated) take
    their mirror twin, or stay NaN.
    """
    scheme = IBUG68
    points = np.asarray(points, dtype=np.float64)
    right_eye = points[list(scheme.right_eye)].mean(axis=0)
    left_eye = points[list(scheme.left_eye)].mean(axis=0)
    origin = (right_eye + left_eye) / 2.0
    y_axis = left_eye - right_eye
    y_axis /= np.linalg.norm(y_axis)
    up = origin - points[[48, 54, 57]].mean(axis=0)  # mouth to eyes
    z_axis = up - (up @ y_axis) * y_axis
    z_axis /= np.linalg.norm(z_axis)
    x_axis = np.cross(y_axis, z_axis)
    local = (points - origin) @ np.stack([x_axis, y_axis, z_axis]).T
    # Factorisation cannot tell a face from its depth-mirror: the nose tip must point forward.
    if local[30, 0] < local[list(scheme.right_eye) + list(scheme.left_eye), 0].mean():
        local[:, 0] *= -1.0
    flip = list(_MODEL_FLIP[: len(points)])
    mirrored = local[flip] * np.array([1.0, -1.0, 1.0])
    symmetric = np.where(np.isnan(local), mirrored, (local + np.nan_to_num(mirrored, nan=0.0)))
    both = ~np.isnan(local) & ~np.isnan(mirrored)
    symmetric = np.where(both, symmetric / 2.0, symmetric)
    symmetric[:, 1] -= np.nanmean(symmetric[: scheme.num_points, 1])
    width = np.linalg.norm(
        symmetric[scheme.right_outer_eye_corner] - symmetric[scheme.left_outer_eye_corner]
    )
    return symmetric * (biocular_mm / width)


@dataclass(frozen=True)
class FaceObservation:
    """One face's 2D points in a crop, each a known combination of model points.

    ``points`` (K, 2) crop pixels; ``weights`` (K, MODEL_POINTS): observed point k is
    ``weights[k] @ model`` (a one-hot row for a landmark the model has, an average for e.g. an
    eye centre); ``yaw_deg`` the face's yaw label, or None to solve it by PnP.
    """

    points: np.ndarray
    weights: np.ndarray
    yaw_deg: float | None = None


@dataclass
class RefinedFace:
    """The refined model (MODEL_POINTS, 3) in mm and the per-iteration diagnostics."""

    model_mm: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)


def _observed_model(observation: FaceObservation, model_m: np.ndarray) -> np.ndarray:
    """Give the model's 3D point for each observed point; NaN where it uses unknown points."""
    observed_model = observation.weights @ np.nan_to_num(model_m)
    unknown = np.isnan(model_m).any(axis=1)
    observed_model[(observation.weights[:, unknown] != 0).any(axis=1)] = np.nan
    return observed_model


def _pose(observation: FaceObservation, model_m: np.ndarray, crop_size: float) -> np.ndarray:
    observed_model = _observed_model(observation, model_m)
    if observation.yaw_deg is None:
        return pose_from_landmarks(observation.points, observed_model, crop_size)
    return pose_with_yaw(observation.points, observed_model, crop_size, observation.yaw_deg)


def _triangulate(
    observations: Sequence[FaceObservation],
    poses: Sequence[np.ndarray | None],
    previous_m: np.ndarray,
    crop_size: float,
    ridge: float,
) -> np.ndarray:
    """Least-squares model given every face's pose: linear in the model's coordinates.

    For an observed point ``u`` of model combination ``P = w @ X`` seen with rotation ``R``
    and translation ``t``: ``f (r1 . P + t1) - (u - c)(r3 . P + t3) = 0`` (and the same for v),
    divided by the face's depth so that every equation is a reprojection error in pixels.
    ``ridge`` (a share of the mean diagonal of the normal equations, pulling towards
    ``previous_m``) keeps points that few faces see where they were.
    """
    focal, centre = CROP_FOCAL_FACTOR * crop_size, crop_size / 2.0
    unknowns = previous_m.size
    normal = np.zeros((unknowns, unknowns))
    rhs = np.zeros(unknowns)
    for observation, pose in zip(observations, poses, strict=True):
        if pose is None:
            continue
        rotation, translation = rotation_of_pose(pose), pose[3:6]
        depth = translation[2]
        for axis in (0, 1):
            offset = observation.points[:, axis] - centre  # (K,)
            direction = focal * rotation[axis][None, :] - offset[:, None] * rotation[2][None, :]
            # Row k's coefficients over vec(X) (model points x 3): weights[k, m] * direction[k, d].
            coefficients = (observation.weights[:, :, None] * direction[:, None, :]).reshape(
                len(offset), -1
            ) / depth
            target = (offset * translation[2] - focal * translation[axis]) / depth
            normal += coefficients.T @ coefficients
            rhs += coefficients.T @ target
    known = np.isfinite(previous_m).ravel()
    damping = ridge * np.trace(normal) / unknowns
    normal[np.diag_indices(unknowns)] += np.where(known, damping, 1e-9)
    rhs += np.where(known, damping * np.nan_to_num(previous_m.ravel()), 0.0)
    solution = np.linalg.solve(normal, rhs).reshape(previous_m.shape)
    observed = np.abs(normal).sum(axis=1).reshape(previous_m.shape)[:, 0] > 1e-6
    return np.where(observed[:, None], solution, previous_m)


def depth_scale(
    model_m: np.ndarray,
    observations: Sequence[FaceObservation],
    crop_size: float,
    scales: np.ndarray | None = None,
    sample: int = 400,
) -> float:
    """Depth factor of the model that best explains the yaw-labelled faces.

    Alternating PnP and triangulation removes a depth error only slowly, because the unlabelled
    faces' poses adapt to whatever depth the model has (the bas-relief ambiguity again). So the
    start is chosen first: the factor on the forward (x) axis whose yaw-fixed PnP fits a sample
    of the labelled faces with the least reprojection error. Without labelled faces it is 1.
    """
    labelled = [o for o in observations if o.yaw_deg is not None][:sample]
    if not labelled:
        return 1.0
    scales = np.arange(0.3, 1.55, 0.05) if scales is None else scales
    camera_errors = []
    for scale in scales:
        scaled = model_m * np.array([scale, 1.0, 1.0])
        errors = []
        for observation in labelled:
            try:
                pose = _pose(observation, scaled, crop_size)
            except ValueError:
                continue
            projected = _project(observation, scaled, pose, crop_size)
            errors.append(np.nanmean(np.linalg.norm(projected - observation.points, axis=1)))
        camera_errors.append(np.mean(errors) if errors else np.inf)
    return float(scales[int(np.argmin(camera_errors))])


def _project(
    observation: FaceObservation, model_m: np.ndarray, pose: np.ndarray, crop_size: float
) -> np.ndarray:
    """Project the observation's model points with ``pose`` (NaN: unknown points)."""
    return project_points(
        _observed_model(observation, model_m),
        rotation_of_pose(pose),
        pose[3:6],
        crop_camera_matrix(crop_size),
    )


def refine_mean_face(
    initial_mm: np.ndarray,
    observations: Sequence[FaceObservation],
    crop_size: float,
    iterations: int = 5,
    ridge: float = 1e-3,
    progress: bool = True,
) -> RefinedFace:
    """Alternate per-face PnP and triangulation, starting from ``initial_mm`` (68 or 70 points).

    Faces with a yaw label keep it (:func:`~headpose_training.pose_labels.pose_with_yaw`);
    that is what fixes the depth. A face whose PnP fails this iteration is left out of it.
    ``history`` records, per iteration, the mean reprojection error (px) and the mean absolute
    difference between the free-PnP yaw and the label on the labelled faces.
    """
    model = np.full((MODEL_POINTS, 3), np.nan)
    model[: len(initial_mm)] = np.asarray(initial_mm, dtype=np.float64) / 1000.0
    model[:, 0] *= depth_scale(model, observations, crop_size)
    result = RefinedFace(model * 1000.0)
    for iteration in range(iterations):
        poses: list[np.ndarray | None] = []
        for observation in tqdm(
            observations, desc=f"mean face, pass {iteration + 1}", disable=not progress
        ):
            try:
                poses.append(_pose(observation, model, crop_size))
            except ValueError:
                poses.append(None)
        model = to_head_frame(_triangulate(observations, poses, model, crop_size, ridge))
        model /= 1000.0  # to_head_frame scales to millimetres
        result.history.append(_diagnostics(observations, model, crop_size))
    result.model_mm = model * 1000.0
    return result


def _diagnostics(
    observations: Sequence[FaceObservation], model_m: np.ndarray, crop_size: float
) -> dict[str, float]:
    """Free-PnP yaw against the labels, the figure that says whether the depth is right."""
    differences = []
    for observation in observations:
        if observation.yaw_deg is None:
            continue
        try:
            free = _pose(
                FaceObservation(observation.points, observation.weights), model_m, crop_size
            )
        except ValueError:
            continue
        differences.append(abs((free[0] - observation.yaw_deg + 180.0) % 360.0 - 180.0))
    return {
        "free_pnp_yaw_mae_deg": float(np.mean(differences)) if differences else float("nan"),
        "faces": float(len(differences)),
    }
