"""Face detection behind a small interface, plus validation of boxes given from outside.

The estimator only needs "boxes with scores for this image"; keeping the detector behind
:class:`FaceDetector` lets the node take boxes from an upstream topic instead, and lets a
better detector replace MediaPipe without touching tracking or inference.

Boxes are ``(x0, y0, x1, y1)`` in image pixels (x right, y down), in the *landmark-box*
convention: the bounding rectangle of the 68 landmarks, which is what the model's crop rule
(``crop.square_box_from_face_box``) was trained on. Each detector converts its own box
convention to that one (see :data:`MEDIAPIPE_TO_LANDMARK_BOX`).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from headpose_ros.core.config import ConfigError, DetectorConfig

__all__ = [
    "MEDIAPIPE_TO_LANDMARK_BOX",
    "MIRROR_SAME_BOX_IOU",
    "WHOLE_FACE_SCORE_MARGIN",
    "BoxCalibration",
    "Detection",
    "FaceDetector",
    "MediaPipeFaceDetector",
    "create_detector",
    "detections_from_boxes",
    "external_detections",
    "filter_detections",
    "merge_detections",
    "open_blazeface",
    "part_of_face",
    "tile_pyramid",
]


@dataclass(frozen=True)
class Detection:
    """One face: box in landmark-box convention (image pixels) and a confidence in [0, 1].

    ``mirror_only``: only the mirror image showed it (:func:`merge_detections`), a weaker kind
    of evidence that the network is asked to confirm clearly before the face is published.
    ``region``: the part of the image the detector looked at, ``(x0, y0, x1, y1)`` pixels (a
    tile of the pyramid, or the whole image); ``None`` when unknown (boxes from outside).
    """

    box: tuple[float, float, float, float]
    score: float
    mirror_only: bool = False
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class BoxCalibration:
    """Affine map from a detector's box to the landmark box, relative to the detector box.

    landmark-box centre = detector centre + (dx, dy) * detector size;
    landmark-box size = detector size * (sx, sy).
    """

    dx: float
    dy: float
    sx: float
    sy: float

    def apply(
        self, x0: float, y0: float, x1: float, y1: float
    ) -> tuple[float, float, float, float]:
        """Detector box -> landmark box."""
        width, height = x1 - x0, y1 - y0
        cx = (x0 + x1) / 2.0 + self.dx * width
        cy = (y0 + y1) / 2.0 + self.dy * height
        half_w, half_h = width * self.sx / 2.0, height * self.sy / 2.0
        return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


#: Per MediaPipe ``model_selection``; fitted by ``benchmarks/bench_detectors.py --calibrate`` on
#: 300-W helen_train (median of the per-face ratios; raw boxes at the default ``min_score``,
#: since BlazeFace blends the boxes of its anchors above it). MediaPipe's box is larger than the
#: landmark box (it includes forehead and cheeks) and centred higher (the landmarks start at the
#: brows), so without this map every crop would be too loose and too high for the model.
MEDIAPIPE_TO_LANDMARK_BOX = {
    0: BoxCalibration(dx=-0.001, dy=0.048, sx=0.943, sy=0.919),
    1: BoxCalibration(dx=0.001, dy=0.082, sx=0.885, sy=0.863),
}


#: Tile side as a multiple of the face height it is meant for: BlazeFace short-range finds
#: the most faces, frontal to profile, at 2.5-3 face heights per input (measured on AFLW).
TILE_FACE_RATIO = 2.75
#: Ratio between the tile sides of neighbouring pyramid levels.
TILE_STEP = 1.6
#: Neighbouring tiles of a level lie at most this share of a tile apart, so a face up to
#: (1 - TILE_STRIDE) of a tile lies whole in one of them; a larger one lies whole in a tile of
#: the next larger level. Half a tile apart found no more faces and cost 1.8 times as much.
TILE_STRIDE = 0.7
#: Two detections are one face above this IoU, or when this share of the smaller lies in
#: the other.
MERGE_IOU = 0.3
MERGE_CONTAINMENT = 0.6
#: A face the image itself shows at a box overlapping the mirror view's by more than this keeps
#: the image's box (its landmarks start from it); a lower overlap is a part of the face (an eye,
#: a cheek) and the better-scored box stays.
MIRROR_SAME_BOX_IOU = 0.5
#: Over a tile pyramid, a face only one region (the whole image or one tile) saw needs this
#: score: on AFLW scenes and helen_test 80% of the pyramid's false positives are such single
#: views, 2% of the real faces (measured with benchmarks/bench_detectors.py).
SINGLE_VIEW_MIN_SCORE = 0.6
#: A detection is a part of a bigger, at least as confident face (an ear, an eye, a chin that
#: BlazeFace scores as a face, mostly beside turned heads) when its side is below this share
#: of the other's and most of it (:data:`PART_INSIDE_SHARE`) lies in the other's head region,
#: the box grown by :data:`PART_HEAD_GROWTH`. On held-out AFLW scenes this drops 70% of the
#: false positives and no face. Without the score condition, low-scored false positives on
#: large background patches swallowed the real small faces inside them.
PART_SIDE_RATIO = 0.6
PART_HEAD_GROWTH = 1.6
PART_INSIDE_SHARE = 0.5
#: A tile too small to hold a large face turned away often scores a piece of it (an eye and a
#: cheek) a few hundredths above the whole image's box of the whole face, and the piece's crop
#: shows the network too little of the face. A whole-image box scoring at most this much less
#: is kept beside the piece (:func:`merge_detections`), not merged into it, and the network
#: keeps the one it sees as a face: on AFLW validation scenes this finds 6 of the 62 faces the
#: product path missed, and changes no face of bench_detectors' scenes.
WHOLE_FACE_SCORE_MARGIN = 0.1
#: External box coordinates beyond this (pixels) are corrupt, not faces.
_MAX_COORDINATE = 1e6
#: Share of a face box that must lie inside the image for the face to be processed.
MIN_INSIDE_FRACTION = 0.25


class FaceDetector(abc.ABC):
    """Finds faces in a BGR image."""

    @abc.abstractmethod
    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in ``image_bgr`` (HxWx3 uint8), best score first, boxes in image pixels."""

    def close(self) -> None:  # noqa: B027 - optional hook, most detectors hold nothing
        """Release native resources (graphs, threads)."""

    def native_threads(self) -> set[int]:
        """Ids of the OS threads the detector computes on besides its caller's (if known).

        Run in the background, those threads get a lower priority than tracking.
        """
        return set()

    def detect_in_steps(self, image_bgr: np.ndarray) -> Generator[None, None, list[Detection]]:
        """Detect as :meth:`detect` does, pausing (``yield``) between pieces of the work.

        A caller running the detector in the background resumes it only while the CPU is not
        needed for tracking; a detector that cannot be split does its work in one piece.
        """
        detections = self.detect(image_bgr)
        yield from ()
        return detections


class MediaPipeFaceDetector(FaceDetector):
    """MediaPipe 0.10.14 BlazeFace over a tile pyramid (the wheel's models, offline).

    BlazeFace finds a face reliably only when the face fills a fair share of the model's
    input: short-range (128 px input) finds 99-100% of real faces with |yaw| < 30 degrees and
    96% of those turned beyond 60 degrees when the input is 2.5 face heights across, but
    only 66% of the profiles 96 px high in a whole 640x480 frame
    (``benchmarks/bench_detectors.py``). So the model runs on the whole frame and then on
    square tiles of shrinking sides (a factor :data:`TILE_STEP` apart, overlapping so that
    every face lies whole in a tile of about its level) down to tiles
    :data:`TILE_FACE_RATIO` times ``smallest_face_px``. Detections cut by an inner tile
    edge are dropped (the neighbouring tile holds that face whole), and the rest are merged
    by overlap, best score first, dropping parts of a face (:func:`merge_detections`). Every
    region (or the larger ones, ``detector.mirror_region_share``) is also searched in the
    mirror image, where BlazeFace finds some turned heads it misses. The
    short-range model runs through the Tasks API, which reports turned heads' low scores
    down to ``min_score``. Its models ship inside the wheel: nothing is downloaded at run
    time.
    """

    def __init__(self, config: DetectorConfig) -> None:
        """Build the MediaPipe graph (import is deferred: mediapipe is heavy to import)."""
        self._calibration = MEDIAPIPE_TO_LANDMARK_BOX[config.model_selection]
        self._smallest_face_px = config.smallest_face_px
        self._mirror_region_share = config.mirror_region_share
        self._min_score = config.min_score
        before = _thread_ids()
        self._blazeface = open_blazeface(config.model_selection, config.min_score)
        # The graph runs its model on threads of its own, started with it.
        self._threads = _thread_ids() - before

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Run BlazeFace on the whole image and every tile; merge into landmark boxes."""
        steps = self.detect_in_steps(image_bgr)
        while True:
            try:
                next(steps)
            except StopIteration as finished:
                return finished.value

    def detect_in_steps(self, image_bgr: np.ndarray) -> Generator[None, None, list[Detection]]:
        """Detect region by region, pausing after each (one or two BlazeFace runs, 1-3 ms each).

        Regions of at least ``detector.mirror_region_share`` of the shorter side are also
        searched in the mirror image; a face found both ways keeps its box from the image
        itself (:func:`merge_detections`). Mirror views are counted apart from the image's own
        for the single-view rule: counted together, they passed the demo's spacesuit.
        """
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        mirror = np.ascontiguousarray(rgb[:, ::-1])
        height, width = rgb.shape[:2]
        found: list[Detection] = []
        found_in_mirror: list[Detection] = []
        regions = tile_pyramid(width, height, self._smallest_face_px)
        for x0, y0, x1, y1 in regions:
            is_tile = (x1 - x0, y1 - y0) != (width, height)
            found += self._detect_tile(rgb, x0, y0, x1, y1, is_tile)
            if max(x1 - x0, y1 - y0) >= self._mirror_region_share * min(width, height):
                found_in_mirror += self._detect_tile(
                    mirror, x0, y0, x1, y1, is_tile, mirrored=True
                )
            yield
        single_view_min_score = SINGLE_VIEW_MIN_SCORE if len(regions) > 1 else 0.0
        return merge_detections(
            found, single_view_min_score, found_in_mirror, (0, 0, width, height)
        )

    def _detect_tile(
        self,
        rgb: np.ndarray,
        x0: int,
        y0: int,
        x1: int,
        y1: int,
        is_tile: bool,
        mirrored: bool = False,
    ) -> list[Detection]:
        """Detect in one region (image pixels); on a tile, drop faces cut by an inner edge.

        With ``mirrored``, ``rgb`` is the mirror image and the region ``(x0, y0, x1, y1)`` is
        still given, and the boxes returned, in the pixels of the original image.
        """
        image_height, image_width = rgb.shape[:2]
        pixels = rgb[y0:y1, image_width - x1 : image_width - x0] if mirrored else rgb[y0:y1, x0:x1]
        kept = []
        for score, left, top, box_width, box_height in self._blazeface.run(pixels):
            # The legacy graph does not follow its threshold above 0.5 either (measured).
            if score < self._min_score:
                continue
            if mirrored:
                left = (x1 - x0) - left - box_width
            bx0, by0 = x0 + left, y0 + top
            bx1, by1 = bx0 + box_width, by0 + box_height
            cut = is_tile and (
                (bx0 < x0 and x0 > 0)
                or (by0 < y0 and y0 > 0)
                or (bx1 > x1 and x1 < image_width)
                or (by1 > y1 and y1 < image_height)
            )
            if not cut:
                box = self._calibration.apply(bx0, by0, bx1, by1)
                kept.append(Detection(box=box, score=score, region=(x0, y0, x1, y1)))
        return kept

    def native_threads(self) -> set[int]:
        """Return the MediaPipe graph's own threads (Linux; empty elsewhere)."""
        return set(self._threads)

    def close(self) -> None:
        """Close the MediaPipe graph and its worker threads."""
        self._blazeface.close()


#: One BlazeFace detection in the pixels of the region it ran on: score, left, top, width, height.
RawFace = tuple[float, float, float, float, float]


def open_blazeface(model_selection: int, min_score: float) -> _TasksBlazeFace | _LegacyBlazeFace:
    """BlazeFace of ``model_selection`` as a ``run(rgb) -> list[RawFace]`` object, boxes raw.

    The raw boxes are BlazeFace's own (score-weighted blends of its anchors down to
    ``min_score``), before :data:`MEDIAPIPE_TO_LANDMARK_BOX`; ``close()`` stops its threads.
    """
    if model_selection == 0:
        return _TasksBlazeFace(min_score)
    return _LegacyBlazeFace(model_selection, min_score)


def _import_mediapipe() -> Any:
    """Import mediapipe, or say which setting needs it."""
    try:
        import mediapipe
    except ImportError as error:
        raise ConfigError(
            f"detector.backend=mediapipe needs mediapipe 0.10.14 ({error}); install it or "
            "use detector.backend=external with boxes from another detector"
        ) from error
    return mediapipe


class _TasksBlazeFace:
    """Short-range BlazeFace through MediaPipe's Tasks API, which reports scores below 0.5.

    Turned heads score low: a threshold under the legacy graph's fixed 0.5 is what finds
    profiles. The model file is the one the wheel ships for the legacy graph.
    """

    def __init__(self, min_score: float) -> None:
        mediapipe = _import_mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        model = Path(mediapipe.__file__).parent / "modules" / "face_detection"
        self._image, self._srgb = mediapipe.Image, mediapipe.ImageFormat.SRGB
        self._graph = vision.FaceDetector.create_from_options(
            vision.FaceDetectorOptions(
                base_options=BaseOptions(
                    model_asset_path=str(model / "face_detection_short_range.tflite")
                ),
                min_detection_confidence=min_score,
            )
        )

    def run(self, rgb: np.ndarray) -> list[RawFace]:
        """Faces in an RGB region."""
        image = self._image(image_format=self._srgb, data=np.ascontiguousarray(rgb))
        return [
            (
                float(found.categories[0].score),
                found.bounding_box.origin_x,
                found.bounding_box.origin_y,
                found.bounding_box.width,
                found.bounding_box.height,
            )
            for found in self._graph.detect(image).detections
        ]

    def close(self) -> None:
        """Stop the graph's threads."""
        self._graph.close()


class _LegacyBlazeFace:
    """Full-range BlazeFace through the legacy ``solutions`` graph.

    The Tasks API cannot decode the full-range model (its anchors are fixed to the short
    range's); the legacy graph reports no face below 0.5 whatever the setting.
    """

    def __init__(self, model_selection: int, min_score: float) -> None:
        _import_mediapipe()
        from mediapipe.python.solutions import face_detection

        self._graph = face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_score
        )

    def run(self, rgb: np.ndarray) -> list[RawFace]:
        """Faces in an RGB region."""
        height, width = rgb.shape[:2]
        faces = []
        for found in self._graph.process(np.ascontiguousarray(rgb)).detections or []:
            box = found.location_data.relative_bounding_box
            faces.append(
                (
                    float(found.score[0]),
                    box.xmin * width,
                    box.ymin * height,
                    box.width * width,
                    box.height * height,
                )
            )
        return faces

    def close(self) -> None:
        """Stop the graph's threads."""
        self._graph.close()


def _thread_ids() -> set[int]:
    """Ids of this process's OS threads, from /proc (empty where there is none)."""
    try:
        return {int(name) for name in os.listdir(f"/proc/{os.getpid()}/task")}
    except OSError:
        return set()


def tile_pyramid(
    width: int, height: int, smallest_face_px: float
) -> list[tuple[int, int, int, int]]:
    """List the regions to detect in: the whole image, then square tiles down a pyramid.

    Tile sides shrink by :data:`TILE_STEP` per level from the image's longer side (capped at
    the shorter one) down to :data:`TILE_FACE_RATIO` x ``smallest_face_px`` (0: the whole
    image only); neighbouring tiles of a level lie at most :data:`TILE_STRIDE` of a tile
    apart, spread evenly from edge to edge. Regions are ``(x0, y0, x1, y1)`` pixels.
    """
    regions = [(0, 0, width, height)]
    if smallest_face_px <= 0:
        return regions
    smallest = max(TILE_FACE_RATIO * smallest_face_px, 16.0)
    sides: list[float] = []
    side = max(width, height) / TILE_STEP
    while side > smallest * TILE_STEP**0.5:
        sides.append(min(side, min(width, height)))
        side /= TILE_STEP
    sides.append(smallest)
    for tile in dict.fromkeys(int(round(side)) for side in sides):
        if tile >= max(width, height):
            continue
        for y in _tile_starts(height, tile):
            for x in _tile_starts(width, tile):
                regions.append((x, y, min(x + tile, width), min(y + tile, height)))
    return regions


def _tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins along one axis, evenly spread, the first and the last at the edges."""
    if tile >= length:
        return [0]
    count = int(np.ceil((length - tile) / (TILE_STRIDE * tile))) + 1
    return [int(round(v)) for v in np.linspace(0, length - tile, count)]


def merge_detections(
    detections: list[Detection],
    single_view_min_score: float = 0.0,
    mirror_views: Sequence[Detection] = (),
    image_region: tuple[int, int, int, int] | None = None,
) -> list[Detection]:
    """One detection per face: best score first, dropping any that overlaps a kept one.

    Two boxes are one face when their IoU exceeds :data:`MERGE_IOU` or the smaller lies
    mostly (:data:`MERGE_CONTAINMENT`) inside the other: the same face seen in two tiles or
    at two levels, or a part of a face seen as a face. A face seen only once is kept from
    ``single_view_min_score``: over a tile pyramid a real face is usually found by several
    overlapping tiles and levels, a face-like texture by one. ``mirror_views`` (boxes found in
    the mirror image, mapped back) find faces too, under the same rule, but are counted apart:
    a region and its mirror image are not two independent looks (a texture seen once is
    usually seen in its mirror too, like the spacesuit of the demo's astronaut). A face the
    image itself shows at about the same box (IoU above :data:`MIRROR_SAME_BOX_IOU`) keeps the
    image's box: the mirror adds faces, not new boxes for faces the image frames well. A face
    that no region of the image itself shows at about its box is marked ``mirror_only`` (a
    bigger box around it, such as the spacesuit's, does not count). A face the whole image
    (``image_region``) frames around a better-scored piece of it that a tile showed is kept
    beside that piece (:func:`_whole_face_of`). Last, detections that are parts of a bigger
    face at least as confident (:data:`PART_SIDE_RATIO`) are dropped.
    """
    kept: list[Detection] = []
    views: list[list[int]] = []  # per face: [views in the image, views in the mirror image]
    mirror_only: list[bool] = []  # per face: no image view at about its box (yet)
    every_view = [(d, 0) for d in detections] + [(d, 1) for d in mirror_views]
    for detection, source in sorted(every_view, key=lambda view: -view[0].score):
        box = np.asarray(detection.box)
        twin = next(
            (
                i
                for i, k in enumerate(kept)
                if _same_face(box, np.asarray(k.box))
                and not _whole_face_of(k, detection, image_region)
            ),
            None,
        )
        if twin is None:
            kept.append(detection)
            views.append([1 - source, source])
            mirror_only.append(source == 1)
            continue
        views[twin][source] += 1
        same_box = _overlap(box, np.asarray(kept[twin].box))[0] > MIRROR_SAME_BOX_IOU
        if mirror_only[twin] and source == 0 and same_box:
            kept[twin] = replace(detection, score=kept[twin].score)
            mirror_only[twin] = False
    faces = [
        replace(detection, mirror_only=only)
        for detection, seen, only in zip(kept, views, mirror_only, strict=True)
        if max(seen) > 1 or detection.score >= single_view_min_score
    ]
    return [
        d
        for d in faces
        if not any(other.score >= d.score and part_of_face(d.box, other.box) for other in faces)
    ]


def _whole_face_of(
    part: Detection, whole: Detection, image_region: tuple[int, int, int, int] | None
) -> bool:
    """Whether ``whole`` is a face the whole image frames and of which ``part`` is a piece.

    The region ``part`` was found in could not hold ``whole`` (it showed a piece of it), and
    ``whole`` scores at most :data:`WHOLE_FACE_SCORE_MARGIN` less. Such a box is then a face of
    its own rather than a view of ``part``: both go to the estimator, whose network keeps the
    one it sees as a face (two tracks on one face merge).
    """
    region = part.region
    if image_region is None or whole.region != image_region or region is None:
        return False
    tile_holds_it = (
        region[0] <= whole.box[0]
        and region[1] <= whole.box[1]
        and whole.box[2] <= region[2]
        and whole.box[3] <= region[3]
    )
    return (
        not tile_holds_it
        and whole.score >= part.score - WHOLE_FACE_SCORE_MARGIN
        and part_of_face(part.box, whole.box)
    )


def part_of_face(
    small: Sequence[float], big: Sequence[float], head_growth: float = PART_HEAD_GROWTH
) -> bool:
    """Whether box ``small`` is a piece of the face ``big``: much smaller, in its head region.

    Boxes are ``(x0, y0, x1, y1)`` landmark boxes; the head region is ``big`` grown by
    ``head_growth``; the other thresholds are :data:`PART_SIDE_RATIO` and
    :data:`PART_INSIDE_SHARE`.
    """
    small_side, big_side = small[2] - small[0], big[2] - big[0]
    if small_side >= PART_SIDE_RATIO * big_side:
        return False
    cx, cy = (big[0] + big[2]) / 2.0, (big[1] + big[3]) / 2.0
    half_w, half_h = head_growth * big_side / 2.0, head_growth * (big[3] - big[1]) / 2.0
    ix = max(0.0, min(small[2], cx + half_w) - max(small[0], cx - half_w))
    iy = max(0.0, min(small[3], cy + half_h) - max(small[1], cy - half_h))
    return ix * iy > PART_INSIDE_SHARE * small_side * (small[3] - small[1])


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """IoU of two boxes, and the share of the smaller one that lies in the other."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return inter / max(area_a + area_b - inter, 1e-9), inter / max(min(area_a, area_b), 1e-9)


def _same_face(a: np.ndarray, b: np.ndarray) -> bool:
    iou, containment = _overlap(a, b)
    return iou > MERGE_IOU or containment > MERGE_CONTAINMENT


def detections_from_boxes(
    boxes: np.ndarray, scores: np.ndarray | None = None
) -> tuple[list[Detection], int]:
    """Validate externally given ``(N, 4)`` boxes; return the usable ones and how many were bad.

    Boxes with non-finite or absurd (beyond a million pixels) values or non-positive size are
    rejected (the caller counts them) rather than raising, because one bad box from an upstream
    detector must not cost the other faces of the frame.
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return [], 0
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(
            f"face boxes must have shape (N, 4) as (x0, y0, x1, y1), got {array.shape}"
        )
    score_values = np.ones(len(array)) if scores is None else np.asarray(scores, dtype=np.float64)
    if score_values.shape != (len(array),):
        raise ValueError(
            f"need one score per box, got {score_values.shape} for {len(array)} boxes"
        )
    sane = np.all(np.isfinite(array) & (np.abs(array) < _MAX_COORDINATE), axis=1)
    good = sane & (array[:, 2] > array[:, 0]) & (array[:, 3] > array[:, 1])
    detections = [
        Detection(
            box=tuple(float(v) for v in box), score=float(np.clip(np.nan_to_num(score), 0.0, 1.0))
        )
        for box, score in zip(array[good], score_values[good], strict=True)
    ]
    detections.sort(key=lambda d: -d.score)
    return detections, int((~good).sum())


def external_detections(
    boxes: np.ndarray, scores: np.ndarray | None
) -> tuple[list[Detection], int, str]:
    """Boxes from the caller as detections, never raising: ``(kept, rejected, why)``.

    A malformed array rejects all its boxes (counted as ``N // 4``, at least one), bad rows
    only themselves; ``why`` is empty when nothing was rejected.
    """
    try:
        detections, bad = detections_from_boxes(boxes, scores)
    except ValueError as error:
        return [], max(1, int(np.size(boxes) // 4)), str(error)
    return detections, bad, f"{bad} external box(es) non-finite or empty" if bad else ""


def filter_detections(
    detections: list[Detection], width: int, height: int, min_face_px: float
) -> tuple[list[Detection], list[tuple[str, str]]]:
    """Keep the faces worth a crop; say why each other one was dropped.

    Returns the kept detections and ``(reason, detail)`` per dropped one: ``face_too_small``
    (shorter side below ``min_face_px``: too few pixels for landmarks) or
    ``face_outside_image`` (less than :data:`MIN_INSIDE_FRACTION` of the box in the image).
    """
    kept: list[Detection] = []
    dropped: list[tuple[str, str]] = []
    for detection in detections:
        x0, y0, x1, y1 = detection.box
        if min(x1 - x0, y1 - y0) < min_face_px:
            dropped.append(("face_too_small", f"{x1 - x0:.0f}x{y1 - y0:.0f} px"))
            continue
        inside = max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
        if inside < MIN_INSIDE_FRACTION * (x1 - x0) * (y1 - y0):
            dropped.append(("face_outside_image", f"box {tuple(round(v) for v in detection.box)}"))
            continue
        kept.append(detection)
    return kept, dropped


def create_detector(config: DetectorConfig) -> FaceDetector | None:
    """Build the configured detector; ``None`` for ``backend: external`` (boxes from outside)."""
    if config.backend == "mediapipe":
        return MediaPipeFaceDetector(config)
    return None
