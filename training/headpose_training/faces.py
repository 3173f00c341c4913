"""Training faces of every source, decoded once, with their labels, ready for augmentation.

A :class:`FaceSet` holds one source's faces as images with a crop box each, landmarks and
masks in the 68-point iBUG layout, visibility labels with their own mask, and, once
:func:`label_poses` has run, a pose label per face. 300-W faces are stored as patches around
the crop box with room for augmentation (black where the photo ends, as at inference); AFLW
faces keep their 120x120 crops, whose faces nearly fill them, so their crops are completed by
replicating the border instead of painting a black frame that would mark them as "AFLW".

Decoded faces are cached as ``.npz`` files named after a hash of what they were made from, so
a second run starts in seconds and different data never share a cache.

Splits keep every copy of a photograph on one side (:func:`split_by_group`); sampling draws
each epoch's faces from the sources in set proportions and, within AFLW, equally from each
|yaw| bin (:func:`draw_epoch`), so the few thousand profile faces are not drowned out by the
many frontal ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from headpose_ros.core.crop import (
    SquareBox,
    apply_affine,
    crop_affine,
    crop_image,
    square_box_from_landmarks,
)
from headpose_ros.core.landmarks import IBUG68
from headpose_training.aflw import (
    AFLW21_MODEL_WEIGHTS,
    AFLW_BOX_SCALE,
    duplicate_groups,
    load_aflw_crops,
    to_ibug68,
)
from headpose_training.data import iter_300w
from headpose_training.mean_face import MODEL_POINTS, FaceObservation
from headpose_training.pose_labels import pose_from_landmarks, pose_with_yaw

__all__ = [
    "FaceSet",
    "draw_epoch",
    "label_poses",
    "load_300w_faces",
    "load_aflw_faces",
    "mean_face_observations",
    "split_by_group",
]

#: Patch around a 300-W face: this many crop-box sides, at this many pixels per input pixel,
#: so rotation up to 45 degrees, 15% zoom and 5% shift never read outside it or upsample.
_CONTEXT = 1.75
_RESOLUTION = 1.5

#: Yaw labels beyond this are taken for errors (the face would be seen from behind).
_MAX_LABEL_YAW_DEG = 120.0

_IBUG_WEIGHTS = np.eye(MODEL_POINTS)[: IBUG68.num_points]


@dataclass
class FaceSet:
    """One source's faces; every array has the faces along its first axis.

    ``images`` (N, P, P, 3) uint8 BGR; ``boxes`` (N, 3) crop box centre x, y and side in image
    pixels (the paper's crop rule); ``landmarks`` (N, 68, 2) image pixels, NaN where unknown;
    ``mask`` (N, 68) 1 where the position is annotated; ``visibility`` (N, 68) and
    ``visibility_mask`` (N, 68) the visibility label and where it is known; ``yaw_label`` (N,)
    the source's own yaw (degrees, project sign) or NaN; ``pnp_points`` (N, K, 2) image pixels
    of the points that fix the pose, each the combination ``pnp_weights`` (K, 70) of mean-face
    points; ``groups`` (N,) equal for copies of one photograph; ``poses`` (N, 6) and
    ``pose_mask`` (N,) filled by :func:`label_poses`.
    """

    source: str
    names: list[str]
    images: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    mask: np.ndarray
    visibility: np.ndarray
    visibility_mask: np.ndarray
    yaw_label: np.ndarray
    pnp_points: np.ndarray
    pnp_weights: np.ndarray
    groups: np.ndarray
    border_mode: int
    poses: np.ndarray | None = None
    pose_mask: np.ndarray | None = None

    def __len__(self) -> int:
        """Count the faces."""
        return len(self.names)

    def box(self, index: int) -> SquareBox:
        """Crop box of face ``index``."""
        return SquareBox(*(float(v) for v in self.boxes[index]))

    def subset(self, indices: Sequence[int] | np.ndarray) -> FaceSet:
        """Select the faces at ``indices`` (per-face arrays are indexed, shared ones kept)."""
        idx = np.asarray(indices, dtype=np.int64)
        per_face = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "names":
                per_face["names"] = [self.names[i] for i in idx]
            elif isinstance(value, np.ndarray) and item.name != "pnp_weights":
                per_face[item.name] = value[idx]
        return replace(self, **per_face)


def _cache_file(cache_dir: Path | None, prefix: str, key: dict) -> tuple[Path | None, str]:
    text = json.dumps(key, sort_keys=True)
    if cache_dir is None:
        return None, text
    return cache_dir / f"{prefix}_{hashlib.sha1(text.encode()).hexdigest()[:10]}.npz", text


def _save(path: Path | None, key: str, arrays: dict[str, np.ndarray]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, key=key, **arrays)
    temporary.replace(path)


def _load(path: Path | None, key: str) -> dict[str, np.ndarray] | None:
    if path is None or not path.is_file():
        return None
    cached = dict(np.load(path, allow_pickle=False))
    return cached if str(cached.pop("key")) == key else None


def load_300w_faces(
    folders: Sequence[Path], input_size: int, crop_margin: float, cache_dir: Path | None
) -> FaceSet:
    """Decode 300-W folders into patches around each face's crop box (``crop_margin`` rule)."""
    box_side = _RESOLUTION * input_size
    patch_size = int(round(_CONTEXT * box_side))
    key = {
        "folders": [str(f) for f in folders],
        "box_side": box_side,
        "patch": patch_size,
        "margin": crop_margin,
    }
    path, text = _cache_file(cache_dir, f"300w_{input_size}", key)
    arrays = _load(path, text)
    if arrays is None:
        count = sum(len(list(Path(f).glob("*.pts"))) for f in folders)
        names, patches, landmarks = [], [], []
        faces = (sample for folder in folders for sample in iter_300w(folder))
        for sample in tqdm(faces, total=count, desc="decoding 300-W faces", unit="face"):
            box = square_box_from_landmarks(sample.landmarks, crop_margin)
            affine = crop_affine(SquareBox(box.cx, box.cy, box.side * _CONTEXT), patch_size)
            names.append(sample.name)
            patches.append(crop_image(sample.image, affine, patch_size))
            landmarks.append(apply_affine(sample.landmarks, affine))
        arrays = {
            "names": np.array(names),
            "images": np.stack(patches),
            "landmarks": np.stack(landmarks),
        }
        _save(path, text, arrays)
    count = len(arrays["names"])
    centre = patch_size / 2.0
    ones = np.ones((count, IBUG68.num_points))
    return FaceSet(
        source="300w",
        names=[str(n) for n in arrays["names"]],
        images=arrays["images"],
        boxes=np.tile([centre, centre, box_side], (count, 1)),
        landmarks=arrays["landmarks"],
        mask=ones,
        # 300-W annotates every point, self-occluded contour points on the silhouette.
        visibility=ones.copy(),
        visibility_mask=ones.copy(),
        yaw_label=np.full(count, np.nan),
        pnp_points=arrays["landmarks"],
        pnp_weights=_IBUG_WEIGHTS,
        groups=np.arange(count),
        border_mode=cv2.BORDER_CONSTANT,
    )


def load_aflw_faces(folder: Path, crop_margin: float, cache_dir: Path | None) -> FaceSet:
    """Decode the AFLW crops with their 68-slot labels, boxes and duplicate groups."""
    faces = load_aflw_crops(folder)
    key = {"folder": str(folder), "faces": len(faces), "version": 1}
    path, text = _cache_file(cache_dir, "aflw", key)
    arrays = _load(path, text)
    if arrays is None:
        images = np.stack(
            [
                cv2.imread(str(face.image_path), cv2.IMREAD_COLOR)
                for face in tqdm(faces, desc="decoding AFLW crops", unit="face")
            ]
        )
        arrays = {"images": images, "groups": duplicate_groups(images)}
        _save(path, text, arrays)
    mapped = [to_ibug68(face.points, face.visible) for face in faces]
    boxes = []
    for face in faces:
        box = square_box_from_landmarks(face.points, crop_margin)
        boxes.append([box.cx, box.cy, box.side * AFLW_BOX_SCALE])
    return FaceSet(
        source="aflw",
        names=[face.name for face in faces],
        images=arrays["images"],
        boxes=np.array(boxes),
        landmarks=np.stack([m["landmarks"] for m in mapped]),
        mask=np.stack([m["mask"] for m in mapped]),
        visibility=np.stack([m["visibility"] for m in mapped]),
        visibility_mask=np.stack([m["visibility_mask"] for m in mapped]),
        yaw_label=np.array([face.yaw_deg for face in faces]),
        pnp_points=np.stack(
            [np.where(face.visible[:, None], face.points, np.nan) for face in faces]
        ),
        pnp_weights=AFLW21_MODEL_WEIGHTS,
        groups=arrays["groups"],
        border_mode=cv2.BORDER_REPLICATE,
    )


def split_by_group(
    groups: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) indices with every group wholly on one side.

    Groups are shuffled and taken for validation until ``val_fraction`` of the faces is
    reached, so copies of one photograph never straddle the split.
    """
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(unique)
    sizes = dict(zip(*np.unique(groups, return_counts=True), strict=True))
    wanted, taken, val_groups = val_fraction * len(groups), 0, set()
    for group in order:
        if taken >= wanted:
            break
        val_groups.add(group)
        taken += sizes[group]
    is_val = np.isin(groups, list(val_groups))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _observation(faces: FaceSet, index: int, affine: np.ndarray) -> FaceObservation:
    points = apply_affine(faces.pnp_points[index], affine)
    used = np.all(np.isfinite(points), axis=1) & (faces.pnp_weights.sum(axis=1) > 0)
    yaw = float(faces.yaw_label[index])
    return FaceObservation(points[used], faces.pnp_weights[used], None if np.isnan(yaw) else yaw)


def _base_affine(faces: FaceSet, index: int, input_size: int) -> np.ndarray:
    return crop_affine(faces.box(index), input_size)


def mean_face_observations(
    faces: FaceSet, indices: np.ndarray, input_size: int
) -> list[FaceObservation]:
    """Observations of the faces at ``indices`` in their plain crops, for the mean face."""
    return [_observation(faces, int(i), _base_affine(faces, int(i), input_size)) for i in indices]


def label_poses(
    faces: FaceSet, model_mm: np.ndarray, input_size: int, cache_dir: Path | None = None
) -> FaceSet:
    """Pose label of every face in its plain crop's camera (ray-relative angles, metres).

    Faces with a yaw label keep it and get pitch, roll and translation by PnP; the others get
    all six by PnP. A face whose PnP fails (too few points) or whose yaw label is beyond 120
    degrees gets ``pose_mask`` 0. Cached under a hash of the faces, the model and the size.
    """
    key = {
        "source": faces.source,
        "names": list(faces.names),
        "boxes": faces.boxes.round(4).tolist(),
        "model": np.asarray(model_mm).round(6).tolist(),
        "input": input_size,
        "version": 1,
    }
    path, text = _cache_file(cache_dir, f"poses_{faces.source}", key)
    cached = _load(path, text)
    if cached is not None:
        return replace(faces, poses=cached["poses"], pose_mask=cached["pose_mask"])
    model_m = np.asarray(model_mm, dtype=np.float64) / 1000.0
    poses = np.zeros((len(faces), 6))
    known = np.zeros(len(faces))
    for index in tqdm(range(len(faces)), desc=f"pose labels ({faces.source})", unit="face"):
        observation = _observation(faces, index, _base_affine(faces, index, input_size))
        observed_model = observation.weights @ model_m
        try:
            if observation.yaw_deg is None:
                pose = pose_from_landmarks(observation.points, observed_model, input_size)
            else:
                pose = pose_with_yaw(
                    observation.points, observed_model, input_size, observation.yaw_deg
                )
        except ValueError:
            continue
        # A few AFLW labels say more than 120 degrees of yaw for a visible face: label errors.
        poses[index], known[index] = pose, float(abs(pose[0]) <= _MAX_LABEL_YAW_DEG)
    _save(path, text, {"poses": poses, "pose_mask": known})
    return replace(faces, poses=poses, pose_mask=known)


def draw_epoch(
    sets: Sequence[FaceSet],
    weights: Sequence[float],
    yaw_edges_deg: Sequence[float],
    count: int,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """``count`` (set, face) draws: sources in proportion ``weights``, yaw bins balanced.

    Within a source, faces are grouped into |yaw| bins at ``yaw_edges_deg`` (by the yaw label,
    or the pose label where there is none) and each non-empty bin gets an equal share; within
    a bin, faces are drawn without replacement as far as the share allows.
    """
    shares = np.asarray(weights, dtype=np.float64)
    per_set = rng.multinomial(count, shares / shares.sum())
    draws: list[tuple[int, int]] = []
    for set_index, (faces, wanted) in enumerate(zip(sets, per_set, strict=True)):
        yaw = np.where(np.isnan(faces.yaw_label), faces.poses[:, 0], faces.yaw_label)
        bins = np.digitize(np.abs(yaw), yaw_edges_deg)
        members = [np.flatnonzero(bins == b) for b in np.unique(bins)]
        per_bin = rng.multinomial(wanted, np.full(len(members), 1.0 / len(members)))
        for indices, amount in zip(members, per_bin, strict=True):
            repeats = -(-amount // len(indices))
            pool = np.concatenate([rng.permutation(indices) for _ in range(max(repeats, 1))])
            draws.extend((set_index, int(i)) for i in pool[:amount])
    order = rng.permutation(len(draws))
    return [draws[i] for i in order]
