"""Face tracks: stable ids across frames, and where each face's next crop comes from.

In steady state a face's next crop comes from its previous landmarks, so the detector runs
only every ``detector.interval_frames`` frames, or sooner when a track is lost or there is no
track, and the per-frame cost is dominated by the network. When the detector does run, its
boxes are matched to tracks greedily by overlap (IoU), falling back to centre distance for
fast motion where boxes no longer overlap.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

import numpy as np

from headpose_ros.core.config import TrackingConfig
from headpose_ros.core.detection import Detection, part_of_face

__all__ = [
    "CONTAINMENT",
    "DUPLICATE_CONTAINMENT",
    "DUPLICATE_IOU",
    "MAX_SCALE_CHANGE",
    "REANCHOR_IOU",
    "TRACKED_HEAD_GROWTH",
    "FaceTracker",
    "Track",
    "box_containment",
    "box_iou",
]

#: Largest change of a track's box size from one frame's landmarks to the next that is
#: believed; a bigger jump means the landmarks went astray, and the box is not followed.
MAX_SCALE_CHANGE = 1.5
#: Overlap between a track's landmark box and its matched detection below which the detector's
#: box replaces the landmark box as the next crop.
REANCHOR_IOU = 0.5
#: Share of the smaller box inside the other above which a detection continues a track even
#: when their sizes differ too much for IoU to say so.
CONTAINMENT = 0.7
#: Head region of a tracked face, as a multiple of its landmark box, in which a much smaller new
#: detection may be a part of that face (hair, an ear, a lamp behind it) as well as a face of
#: its own (a child beside a parent, a person further back). Wider than the detector's own
#: rule (:data:`~headpose_ros.core.detection.PART_HEAD_GROWTH`): a tracked face has passed the
#: network, so its whole head (hair and ears, two landmark boxes across) is known to be there.
TRACKED_HEAD_GROWTH = 2.0
#: Tracks overlapping more than this are one face: the younger one is dropped.
DUPLICATE_IOU = 0.5
DUPLICATE_CONTAINMENT = 0.9


def box_containment(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area: 1 when one box lies inside the other."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(ix * iy / smaller) if smaller > 0 else 0.0


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Track:
    """One face followed over frames.

    ``box`` is the landmark-box convention box the next crop is made from; it is replaced by
    the landmarks' bounding box after every frame in which the face was processed.
    ``evidence`` says whether this frame confirmed the face (matching detection, or reliable
    landmarks while the detector did not contradict it). ``beside_a_face`` marks a track
    started by a detection that could be a part of a face already tracked (see
    :meth:`FaceTracker.update_with_detections`): the network must see a face in it clearly,
    as it must in a track started by a detection only the mirror image showed
    (``mirror_only``, see :class:`~headpose_ros.core.detection.Detection`).
    """

    track_id: str
    box: np.ndarray
    score: float
    hits: int = 0
    misses: int = 0
    confirmed: bool = False
    source: str = "detector"
    evidence: bool = True
    missed_by_detector: bool = False
    beside_a_face: bool = False
    mirror_only: bool = False
    landmarks: np.ndarray | None = field(default=None, repr=False)

    @property
    def side(self) -> float:
        """Mean box side in pixels (scale for centre-distance matching)."""
        return float(((self.box[2] - self.box[0]) + (self.box[3] - self.box[1])) / 2.0)


def _same_face(a: np.ndarray, b: np.ndarray) -> bool:
    """Two track boxes on one face: strong overlap, or one box almost entirely in the other."""
    return box_iou(a, b) >= DUPLICATE_IOU or box_containment(a, b) >= DUPLICATE_CONTAINMENT


class FaceTracker:
    """Matches detections to tracks and keeps the confirm/drop bookkeeping.

    Per frame: :meth:`begin_frame`, then :meth:`update_with_detections` if a detector (or the
    caller) supplied boxes, :meth:`update_from_landmarks` for every processed track, and
    :meth:`end_frame`, which turns the frame's evidence into hit/miss counts.
    """

    def __init__(self, config: TrackingConfig) -> None:
        """Start with no tracks."""
        self.config = config
        self.tracks: list[Track] = []
        self._counter = itertools.count(1)

    def reset(self) -> None:
        """Forget every track; deterministic ids restart at 1."""
        self.tracks = []
        self._counter = itertools.count(1)

    def _new_id(self) -> str:
        if self.config.deterministic_ids:
            return str(next(self._counter))
        return uuid.uuid4().hex[:8]

    def _match_cost(self, track: Track, detection: Detection) -> float | None:
        """Lower is better; None when the detection cannot be this track's face.

        Overlap (IoU) ranks first. Failing that, a box lying mostly inside the other (a track
        box that shrank or grew against the detector's) or close centres (fast motion) still
        match, ranked after every overlap match.
        """
        box = np.asarray(detection.box)
        iou = box_iou(track.box, box)
        if iou >= self.config.iou_threshold:
            return 1.0 - iou
        containment = box_containment(track.box, box)
        if containment >= CONTAINMENT:
            return 2.0 - containment
        centre_track = (track.box[:2] + track.box[2:]) / 2.0
        distance = float(np.linalg.norm((box[:2] + box[2:]) / 2.0 - centre_track)) / max(
            track.side, 1e-6
        )
        if distance <= self.config.centre_distance:
            return 2.0 + distance
        return None

    @staticmethod
    def _landmarks_agree(track: Track, box: np.ndarray) -> bool:
        """Tell whether the track's fresh landmark box makes a better crop than the detection.

        Landmarks from the previous frame give a tighter, steadier box than a detector; the
        detection only re-anchors the crop when the track had no fresh landmarks or has
        drifted off the detected face (overlap below :data:`REANCHOR_IOU`).
        """
        fresh = track.landmarks is not None and track.misses == 0 and track.source != "detector"
        return fresh and box_iou(track.box, box) >= REANCHOR_IOU

    def begin_frame(self) -> None:
        """Clear the per-frame evidence flags."""
        for track in self.tracks:
            track.evidence = False
            track.missed_by_detector = False

    def update_with_detections(
        self, detections: list[Detection], source: str = "detector"
    ) -> None:
        """Associate a detector run with the tracks: continue tracks and start new ones.

        Greedy matching in order of cost is enough for the handful of faces a robot sees and,
        unlike the Hungarian method, never swaps two well-overlapping pairs to save a little
        total cost. A matched track takes the detection's box (the detector re-anchors the
        crop); an unmatched track keeps its landmark box but gets no evidence this frame.
        An unmatched detection that could be a part of a face already tracked (an ear, an eye
        or a patch of hair that the detector scores as a face, see
        :func:`~headpose_ros.core.detection.part_of_face`) starts a track marked
        ``beside_a_face``, which the network must see clearly: by size and place alone it is
        as much a child's face beside a parent's, or a face further back, as a part.
        """
        pairs = []
        for ti, track in enumerate(self.tracks):
            for di, detection in enumerate(detections):
                cost = self._match_cost(track, detection)
                if cost is not None:
                    pairs.append((cost, ti, di))
        used_tracks: set[int] = set()
        used_detections: set[int] = set()
        for _, ti, di in sorted(pairs):
            if ti in used_tracks or di in used_detections:
                continue
            used_tracks.add(ti)
            used_detections.add(di)
            track, detection = self.tracks[ti], detections[di]
            box = np.asarray(detection.box, dtype=np.float64)
            if not self._landmarks_agree(track, box):
                track.box = box
                track.source = source
            track.score = detection.score
            track.evidence = True
        for ti, track in enumerate(self.tracks):
            track.missed_by_detector = ti not in used_tracks
        faces = [track.box for track in self.tracks if track.hits > 0]
        for di, detection in enumerate(detections):
            if di in used_detections:
                continue
            box = np.asarray(detection.box, dtype=np.float64)
            beside = any(part_of_face(box, face, TRACKED_HEAD_GROWTH) for face in faces)
            self.tracks.append(
                Track(
                    self._new_id(),
                    box,
                    detection.score,
                    source=source,
                    beside_a_face=beside,
                    mirror_only=detection.mirror_only,
                )
            )

    def update_from_landmarks(
        self, track: Track, landmarks: np.ndarray, reliable: bool, detector_blind: bool = False
    ) -> bool:
        """After the network ran on a track's crop: the next crop follows these landmarks.

        Reliable landmarks are evidence unless the detector ran this frame and did not see the
        face: a network always outputs *some* face, so the detector can tell that a face has
        gone, unless the caller knows better (``detector_blind``: the network sees a face so
        clearly that the miss is the detector's, as on heads turned to profile). Unreliable
        ones (low visibility or presence: the face left or is covered; or a box size jump
        beyond :data:`MAX_SCALE_CHANGE`) are no evidence and leave the box where it was; the
        update returns whether the landmarks were accepted.
        """
        finite = landmarks[np.all(np.isfinite(landmarks), axis=1)]
        box = (
            np.concatenate([finite.min(axis=0), finite.max(axis=0)]) if len(finite) >= 2 else None
        )
        if box is not None:
            side = float(((box[2] - box[0]) + (box[3] - box[1])) / 2.0)
            reliable = (
                reliable
                and 1.0 / MAX_SCALE_CHANGE <= side / max(track.side, 1e-6) <= MAX_SCALE_CHANGE
            )
        if not reliable or box is None:
            return False  # a matching detection this frame still counts; nothing else does
        track.landmarks = landmarks
        track.box = box
        track.source = "tracking" if track.source != "external" else "external"
        track.evidence = track.evidence or not track.missed_by_detector or detector_blind
        return True

    def discard(self, track: Track) -> None:
        """Forget a track at once (a detection found not to be a face)."""
        self.tracks = [t for t in self.tracks if t is not track]

    def end_frame(self) -> bool:
        """Count hits and misses, confirm and drop tracks; True when a track was dropped."""
        for track in self.tracks:
            if track.evidence:
                track.hits += 1
                track.misses = 0
                track.confirmed = track.confirmed or track.hits >= self.config.confirm_frames
            else:
                track.misses += 1
                if not track.confirmed:
                    track.hits = 0
        before = len(self.tracks)
        alive = [
            t
            for t in self.tracks
            if t.misses < self.config.drop_frames and (t.confirmed or t.hits > 0)
        ]
        # Two tracks on one face (a detection that failed to match while landmarks drifted):
        # keep the established one.
        kept: list[Track] = []
        for track in sorted(alive, key=lambda t: (not t.confirmed, -t.hits)):
            if not any(_same_face(track.box, other.box) for other in kept):
                kept.append(track)
        self.tracks = [t for t in self.tracks if any(t is k for k in kept)]
        return len(self.tracks) < before

    @property
    def needs_detection(self) -> bool:
        """True when a track lacked evidence last frame (it may be lost) or there is none."""
        return not self.tracks or any(t.misses > 0 for t in self.tracks)
