"""The hostile corpus (test/hostile.py) sent over DDS to running node processes.

Raw and compressed images (decompression bombs up to 50,000 x 50,000 in six formats, every
encoding, junk) go in batches, each followed by a valid frame: once that frame's result
arrives, the node has taken every message of the batch, and each example then checks its
own outcome: the node is alive, its peak RSS grew by less than 200 MB, and its diagnostics
account for every frame it received (processed, rejected with a reason, or replaced by a
newer one). CameraInfo cases (every distortion model, resized, binned, broken) are each
followed by an image once the node has counted the CameraInfo: a usable one must give a
metric position at the right distance, any other a non-metric face counted with its reason.
Every check compares with counts taken in the same test; nothing depends on test order.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import hostile
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_harness import (
    Probe,
    astronaut_frame,
    demo_camera_info,
    image_message,
    start_node,
    stop_node,
    write_params,
)
from rclpy.context import Context
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

pytest.importorskip("headpose_msgs.msg", reason="headpose_msgs is not built (scripts/setup.sh)")

RSS_LIMIT = 200 * hostile.MB
BATCHES = 180  # per transport, 1-16 hostile messages each plus a valid frame
CAMERA_CASES = 200
FUZZ = settings(
    database=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@dataclass
class Target:
    """One node process under fuzz and how to read its diagnostics."""

    name: str
    process: subprocess.Popen[str]
    probe: Probe
    publisher: object

    def diagnostics(self) -> dict[str, str]:
        for array in reversed(self.probe.received["diagnostics"]):
            for status in array.status:
                if status.name == f"{self.name}: head pose":
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def wait(self, condition: Callable[[dict[str, str]], bool], timeout: float = 10.0) -> dict:
        """The first diagnostics of this node that satisfy ``condition`` (asserted to come)."""
        assert self.probe.spin_until(lambda: condition(self.diagnostics()), timeout), (
            self.diagnostics()
        )
        return self.diagnostics()


def received(values: dict[str, str]) -> int:
    return int(values.get("frames received", 0))


def balanced(values: dict[str, str]) -> bool:
    """Every frame received is processed, rejected with a reason, or replaced (none pending)."""
    settled = int(values.get("frames processed", 0))
    settled += int(values.get("frames dropped (newest frame wins)", 0))
    settled += sum(int(v) for k, v in values.items() if k.startswith("rejected: "))
    return bool(values) and settled == received(values)


def counted(values: dict[str, str], prefix: str) -> int:
    return sum(int(v) for k, v in values.items() if k.startswith(prefix))


@pytest.fixture(scope="module")
def fuzz_targets(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[dict]:
    """A node taking raw images and one taking compressed images, and a probe for both."""
    import rclpy

    context = Context()
    rclpy.init(context=context)
    folder = tmp_path_factory.mktemp("fuzz")
    overrides = {"input.queue_depth": 100, "diagnostics.period_s": 0.1}
    raw = start_node(write_params(folder / "raw.yaml", model_dir, **overrides), "/fuzz")
    compressed = start_node(
        write_params(
            folder / "compressed.yaml", model_dir, **overrides, **{"input.transport": "compressed"}
        ),
        "/fuzz",
        "-r",
        "__node:=headpose_compressed",
    )
    probe = Probe(context, "/fuzz")
    targets = {
        "raw": Target(
            "headpose", raw, probe, probe.node.create_publisher(Image, "/fuzz/image", 100)
        ),
        "compressed": Target(
            "headpose_compressed",
            compressed,
            probe,
            probe.node.create_publisher(CompressedImage, "/fuzz/image/compressed", 100),
        ),
    }
    camera_info = probe.node.create_publisher(CameraInfo, "/fuzz/camera_info", 100)
    try:
        for target in targets.values():
            assert probe.spin_until(lambda t=target: t.publisher.get_subscription_count(), 60.0)
        assert probe.spin_until(lambda: camera_info.get_subscription_count() == 2, 20.0)
        yield {**targets, "camera_info": camera_info}
    finally:
        probe.close()
        outputs = [stop_node(raw), stop_node(compressed)]
        context.try_shutdown()
        assert raw.returncode == 0 and compressed.returncode == 0, [o[-4000:] for o in outputs]


def valid_frame(kind: str, stamp_ns: int) -> Image | CompressedImage:
    message = image_message(astronaut_frame(), stamp_ns)
    if kind == "compressed":
        jpeg = cv2.imencode(".jpg", astronaut_frame())[1].tobytes()
        message = CompressedImage(header=message.header, format="jpeg", data=jpeg)
    return message


@pytest.mark.parametrize("kind", ["raw", "compressed"])
def test_hostile_images_over_dds(fuzz_targets: dict, kind: str) -> None:
    target: Target = fuzz_targets[kind]
    pid = target.process.pid
    before = target.wait(balanced)
    sent = received(before)
    tally = hostile.Tally(f"{kind} images over DDS to {target.name}", "batch (1-16 + 1 valid)")
    stamps = iter(range(10**12, 2 * 10**12, 10**6))
    strategy = hostile.raw_images() if kind == "raw" else hostile.compressed_images()

    @settings(FUZZ, max_examples=BATCHES)
    @given(batch=st.lists(strategy, min_size=1, max_size=16))
    def one_batch(batch: list) -> None:
        nonlocal sent
        rss = hostile.peak_rss_reset(pid)
        for message in batch:
            target.publisher.publish(message)
            target.probe.spin_until(lambda: False, 0.005)  # time to take it: few are replaced
        sentinel = valid_frame(kind, next(stamps))
        faces = target.probe.send_and_wait(sentinel, timeout=30.0, publisher=target.publisher)
        sent += len(batch) + 1
        assert target.process.poll() is None, "the node died"
        growth = hostile.peak_rss_growth(rss, pid)
        for message in batch:
            tally.add(type(message).__name__, growth)
        tally.add("valid frame", growth)
        assert growth < RSS_LIMIT, f"{growth / hostile.MB:.0f} MB for one batch"
        assert len(faces.faces) == 1, "valid frames are still processed"
        # Every frame of the batch is accounted for: processed, rejected or replaced.
        target.wait(lambda v: received(v) == sent and balanced(v))

    one_batch()
    after = target.wait(lambda v: received(v) == sent and balanced(v))

    def change(key: str) -> int:
        return counted(after, key) - counted(before, key)

    tally.degraded = change("frames received") - change("frames processed")
    tally.degraded_flagged = change("rejected: ") + change("frames dropped")
    tally.reasons = {
        key.removeprefix("rejected: "): count - counted(before, key)
        for key, count in ((k, int(v)) for k, v in after.items() if k.startswith("rejected: "))
        if count > counted(before, key)
    }
    print(f"\n{tally.report()}; replaced before the worker saw them {change('frames dropped')}")
    assert tally.crashes == 0 and tally.degraded == tally.degraded_flagged > 0
    assert change("rejected: image_too_large") > 0


def test_hostile_camera_infos_over_dds(fuzz_targets: dict) -> None:
    target: Target = fuzz_targets["raw"]
    pid = target.process.pid
    infos = counted(target.wait(balanced), "camera_info received")
    stamps = iter(range(5 * 10**12, 6 * 10**12))
    tally = hostile.Tally("CameraInfo + image over DDS", "CameraInfo and its image")

    def face_through(info: CameraInfo) -> tuple[object, dict[str, str]]:
        """The face of a valid frame sent once the node has counted ``info``."""
        nonlocal infos
        fuzz_targets["camera_info"].publish(info)
        infos += 1
        before = target.wait(lambda v: counted(v, "camera_info received") == infos)
        sentinel = valid_frame("raw", next(stamps))
        faces = target.probe.send_and_wait(sentinel, timeout=30.0, publisher=target.publisher)
        assert target.process.poll() is None, "the node died"
        assert len(faces.faces) == 1
        return faces.faces[0], before

    reference, _ = face_through(demo_camera_info())
    p = reference.pose.position
    distance = np.linalg.norm([p.x, p.y, p.z])
    assert reference.position_is_metric

    @settings(FUZZ, max_examples=CAMERA_CASES)
    @given(case=hostile.camera_infos())
    def one_case(case: hostile.CameraCase) -> None:
        rss = hostile.peak_rss_reset(pid)
        face, before = face_through(case.message)
        growth = hostile.peak_rss_growth(rss, pid)
        tally.add(case.message.distortion_model if case.usable else "unusable", growth)
        tally.add("Image", growth)
        assert growth < RSS_LIMIT
        if case.usable:
            # Resized, binned or distorted intrinsics still describe this image: same distance.
            p = face.pose.position
            assert face.position_is_metric, case.what
            assert np.linalg.norm([p.x, p.y, p.z]) == pytest.approx(distance, rel=0.15)
            return
        tally.degraded += 1
        assert not face.position_is_metric, f"metric through {case.what}"
        flagged = counted(before, "faces not metric: ") + 1
        target.wait(lambda v: counted(v, "faces not metric: ") == flagged)
        tally.degraded_flagged += 1

    one_case()
    print(f"\n{tally.report()}")
    assert tally.degraded == tally.degraded_flagged > 0
    assert {"plumb_bob", "rational_polynomial", "equidistant"} <= tally.by_kind.keys()
