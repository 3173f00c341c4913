"""The hostile corpus through the node's own frame intake, one message at a time, in process.

The same code the node runs per message (:class:`~headpose_ros.frame_intake.FrameIntake`,
with the real estimator), without DDS in between, so each message's peak memory is measured
alone and its outcome checked right after it: no exception, peak RSS growth under 200 MB,
and every degraded result flagged and counted with its reason. ``test_node_fuzz.py`` sends the
same corpus to the node process over DDS. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

from pathlib import Path

import hostile
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from headpose_ros.core.config import config_from_flat
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_ros.demo import astronaut_frame, demo_camera_info, image_message
from headpose_ros.frame_intake import FrameIntake, ProcessedFrame
from headpose_ros.node_config import InputConfig
from headpose_ros.node_support import NodeStats, ReasonLog

RSS_LIMIT = 200 * hostile.MB
IMAGE_MESSAGES = 800  # per transport
CAMERA_CASES = 800  # each a CameraInfo and an image: 1,600 messages
CORPUS = settings(
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> HeadPoseEstimator:
    config = {"inference.model_dir": str(model_dir), "inference.threads": 1}
    estimator = HeadPoseEstimator(config_from_flat(config))
    yield estimator
    estimator.close()


class Harness:
    """A FrameIntake, what it published and logged, and the counters it keeps."""

    def __init__(self, estimator: HeadPoseEstimator) -> None:
        estimator.reset()
        self.stats = NodeStats()
        self.published: list[ProcessedFrame] = []
        self.lines: list[str] = []
        self.intake = FrameIntake(
            estimator,
            InputConfig(),
            self.stats,
            self.published.append,
            ReasonLog(self.lines.append),
        )

    def counters(self) -> dict[str, int]:
        snapshot = self.stats.end_period()
        return {**snapshot.totals, **snapshot.rejected, **snapshot.events}


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


@pytest.mark.parametrize("kind", ["raw", "compressed"])
def test_hostile_images_are_rejected_or_processed_and_always_counted(
    estimator: HeadPoseEstimator, kind: str
) -> None:
    harness, tally = Harness(estimator), hostile.Tally(f"{kind} images through the intake")
    messages = hostile.raw_images() if kind == "raw" else hostile.compressed_images()

    @settings(CORPUS, max_examples=IMAGE_MESSAGES)
    @given(message=messages)
    def one_message(message) -> None:  # noqa: ANN001
        before, published = harness.counters(), len(harness.published)
        rss = hostile.peak_rss_reset()
        try:
            harness.intake.handle(message)
        except Exception:
            tally.crashes += 1
            raise
        growth = hostile.peak_rss_growth(rss)
        tally.add(type(message).__name__, growth)
        assert growth < RSS_LIMIT, f"{growth / hostile.MB:.0f} MB for one message"
        change = grown(before, harness.counters())
        assert change.pop("taken") == 1
        if len(harness.published) > published:  # processed: counted, faces flagged if degraded
            assert change.pop("processed") == 1
            frame = harness.published[-1].frame
            not_metric = sum(not face.metric for face in frame.faces)
            tally.degraded += not_metric
            tally.degraded_flagged += change.get("faces not metric: no camera_info received", 0)
            assert change.get("faces not metric: no camera_info received", 0) == not_metric
        else:  # rejected: counted under exactly one reason
            ((reason, count),) = [(k, v) for k, v in change.items() if not k.startswith("event")]
            assert count == 1 and reason != "processing_error"
            tally.reasons[reason] = tally.reasons.get(reason, 0) + 1
            tally.degraded += 1
            tally.degraded_flagged += 1

    one_message()
    print(f"\n{tally.report()}")
    assert tally.messages >= IMAGE_MESSAGES and tally.crashes == 0
    assert tally.degraded == tally.degraded_flagged
    assert len(tally.by_kind) == 1


def test_hostile_camera_infos_never_give_a_wrong_metric_position(
    estimator: HeadPoseEstimator,
) -> None:
    harness = Harness(estimator)
    tally = hostile.Tally("CameraInfo + image through the intake", "CameraInfo and its image")
    harness.intake.on_camera_info(demo_camera_info())
    harness.intake.handle(image_message(astronaut_frame(), 1))
    reference = harness.published[-1].frame.faces[0]
    assert reference.metric
    distance = float(np.linalg.norm(reference.position))
    stamps = iter(range(2, 10**9))

    @settings(CORPUS, max_examples=CAMERA_CASES)
    @given(case=hostile.camera_infos())
    def one_case(case: hostile.CameraCase) -> None:
        before = harness.counters()
        rss = hostile.peak_rss_reset()
        harness.intake.on_camera_info(case.message)
        harness.intake.handle(image_message(astronaut_frame(), next(stamps)))
        growth = hostile.peak_rss_growth(rss)
        tally.add(case.message.distortion_model if case.usable else "unusable", growth)
        tally.add("Image", 0)
        change = grown(before, harness.counters())
        (face,) = harness.published[-1].frame.faces
        if case.usable:
            # Resized, binned or distorted intrinsics still describe this image: same distance.
            assert face.metric, case.what
            assert np.linalg.norm(face.position) == pytest.approx(distance, rel=0.15), case.what
            return
        tally.degraded += 1
        assert not face.metric, f"metric through {case.what}"
        reasons = [k for k in change if k.startswith("faces not metric: ")]
        assert reasons and change[reasons[0]] == 1, change
        tally.degraded_flagged += 1

    one_case()
    print(f"\n{tally.report()}")
    assert tally.crashes == 0 and tally.degraded == tally.degraded_flagged > 0
    assert {"plumb_bob", "rational_polynomial", "equidistant", "unusable"} <= tally.by_kind.keys()
