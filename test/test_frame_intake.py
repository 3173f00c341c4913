"""FrameIntake, the node's handling of each input message, with a real estimator, no ROS."""

from __future__ import annotations

from pathlib import Path

import hostile
import pytest
from sensor_msgs.msg import CompressedImage, Image

from headpose_ros.core.config import config_from_flat
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_ros.demo import astronaut_frame, demo_camera_info, image_message
from headpose_ros.frame_intake import FrameIntake, ProcessedFrame
from headpose_ros.messages import rclpy_factory
from headpose_ros.node_config import InputConfig
from headpose_ros.node_support import NodeStats, ReasonLog

SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> HeadPoseEstimator:
    config = config_from_flat(
        {
            "inference.model_dir": str(model_dir),
            "inference.threads": 1,
            "tracking.deterministic_ids": True,
            # Detection inside the frame, so that the first frame already has its face.
            "detector.asynchronous": False,
        }
    )
    estimator = HeadPoseEstimator(config)
    yield estimator
    estimator.close()


class Intake:
    """A FrameIntake with its published frames and log lines collected."""

    def __init__(self, estimator: HeadPoseEstimator, settings: InputConfig) -> None:
        estimator.reset()
        self.stats = NodeStats()
        self.published: list[ProcessedFrame] = []
        self.lines: list[str] = []
        log = ReasonLog(self.lines.append)
        self.intake = FrameIntake(estimator, settings, self.stats, self.published.append, log)

    def counts(self) -> dict[str, int]:
        snapshot = self.stats.end_period()
        return {**snapshot.totals, **snapshot.rejected, **snapshot.events}


def test_intake_rejects_bad_images_and_publishes_good_ones(estimator: HeadPoseEstimator) -> None:
    intake = Intake(estimator, InputConfig())
    intake.intake.handle(Image(height=4, width=4, encoding="xyz16", step=8, data=bytes(32)))
    intake.intake.handle(Image(height=4, width=4, encoding="abc", step=8, data=bytes(32)))
    assert intake.published == []
    assert "xyz16" in intake.lines[0] and "'abc'" in intake.lines[1]
    intake.intake.handle(image_message(astronaut_frame(), 2 * SECOND))
    (processed,) = intake.published
    assert processed.frame.timestamp_ns == 2 * SECOND and len(processed.frame.faces) == 1
    # What detection did is in the diagnostics: one run, the face detected and published.
    described = intake.intake.describe()
    assert described["detection: detector_runs"] == "1"
    assert int(described["detection: faces_detected"]) >= 1
    assert described["detection: faces_published"] == "1"
    assert described["detection: face_too_small"] == "0"
    assert processed.frame.camera is None and not processed.frame.faces[0].metric
    # The second detection, a patch of the spacesuit only a mirrored tile shows, is counted as
    # ruled out by the network, not published.
    assert intake.counts() == {
        "taken": 3,
        "processed": 1,
        "unsupported_encoding": 2,
        "faces not metric: no camera_info received": 1,
        "event: not_a_face": 1,
    }


def test_intake_refuses_a_decompression_bomb_before_decoding(
    estimator: HeadPoseEstimator,
) -> None:
    intake = Intake(estimator, InputConfig())
    bomb = CompressedImage(format="png", data=hostile.png_bomb(50_000, 50_000))
    before = hostile.peak_rss_reset()
    intake.intake.handle(bomb)
    assert hostile.peak_rss_growth(before) < 50e6
    assert intake.counts() == {"taken": 1, "processed": 0, "image_too_large": 1}
    assert "50000x50000" in intake.lines[0] and "max_image_pixels" in intake.lines[0]


def test_intake_uses_valid_camera_info_and_counts_invalid(estimator: HeadPoseEstimator) -> None:
    intake = Intake(estimator, InputConfig())
    intake.intake.on_camera_info(demo_camera_info(SECOND))
    assert intake.intake.describe()["camera"] == "fx 600.0 fy 600.0, plumb_bob, 640x480"
    intake.intake.handle(image_message(astronaut_frame(), SECOND))
    assert intake.published[-1].frame.camera is not None
    assert intake.published[-1].frame.faces[0].metric
    broken = demo_camera_info(2 * SECOND)
    broken.distortion_model = "inverse_brown_conrady"
    intake.intake.on_camera_info(broken)
    assert "not supported" in intake.intake.describe()["camera"]
    intake.intake.handle(image_message(astronaut_frame(), 2 * SECOND))
    assert intake.published[-1].frame.camera is None
    assert not intake.published[-1].frame.faces[0].metric
    counts = intake.counts()
    assert counts["camera_info rejected: unsupported_model"] == 1
    assert counts["faces not metric: camera_info rejected"] == 1
    assert "inverse_brown_conrady" in intake.lines[-1]


def test_intake_flags_a_camera_info_for_another_image_size(
    estimator: HeadPoseEstimator,
) -> None:
    intake = Intake(estimator, InputConfig())
    intake.intake.on_camera_info(demo_camera_info(SECOND, width=1280, height=720))
    intake.intake.handle(image_message(astronaut_frame(), SECOND))  # 640x480: not a resize
    frame = intake.published[-1].frame
    assert frame.camera is None and not frame.faces[0].metric
    assert intake.counts()["faces not metric: camera_info does not fit the image"] == 1
    assert any("1280x720" in line and "640x480" in line for line in intake.lines)
    intake.intake.on_camera_info(demo_camera_info(2 * SECOND, width=1280, height=960))
    intake.intake.handle(image_message(astronaut_frame(), 2 * SECOND))  # half size: resized
    frame = intake.published[-1].frame
    assert frame.faces[0].metric and frame.camera.matrix[0, 0] == pytest.approx(300.0)
    assert intake.counts()["event: intrinsics_scaled"] == 1


def test_intake_matches_upstream_boxes_by_stamp(estimator: HeadPoseEstimator) -> None:
    intake = Intake(estimator, InputConfig(external_boxes=True, external_boxes_max_age_s=0.1))
    box = rclpy_factory(
        "headpose_msgs/msg/BoundingBox2D", center_x=294.0, center_y=165.0, size_x=90.0, size_y=90.0
    )
    boxes = rclpy_factory(
        "headpose_msgs/msg/FaceArray",
        faces=[rclpy_factory("headpose_msgs/msg/Face", box=box, detection_score=0.625)],
    )
    boxes.header.stamp.sec = 3
    intake.intake.on_face_boxes(boxes)
    intake.intake.handle(image_message(astronaut_frame(), 5 * SECOND))  # 2 s away: not used
    assert intake.published[-1].frame.faces == []
    intake.intake.handle(image_message(astronaut_frame(), 3 * SECOND + 50_000_000))
    assert [f.score for f in intake.published[-1].frame.faces] == [0.625]
    assert intake.counts()["frames without external boxes"] == 1
