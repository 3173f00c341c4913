"""Property-based fuzzing of the running node with malformed Image, CompressedImage, CameraInfo.

More than 2,000 generated messages reach one node process over DDS. It must stay alive, keep
publishing for valid frames sent between them, and account for every image it received:
received = processed + rejected + dropped (+ at most one still waiting).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_harness import Probe, start_node, stop_node, write_params
from rclpy.context import Context
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from headpose_ros.core.image_codec import SUPPORTED_ENCODINGS
from headpose_ros.demo import astronaut_frame, image_message

pytest.importorskip("headpose_msgs.msg", reason="headpose_msgs is not built (scripts/setup.sh)")

EXAMPLES_PER_TYPE = 700  # x 3 message types > 2,000 messages
FUZZ = settings(
    max_examples=EXAMPLES_PER_TYPE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SENT = {"image": 0, "compressed": 0, "camera_info": 0}


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    """One node (raw images) and one (compressed) under fuzz, and the probe driving them."""
    import rclpy

    context = Context()
    rclpy.init(context=context)
    folder = tmp_path_factory.mktemp("fuzz")
    overrides = {"input.queue_depth": 100, "diagnostics.period_s": 0.2}
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
    try:
        assert probe.wait_for_node(), stop_node(raw)
        assert probe.spin_until(lambda: probe.compressed.get_subscription_count() > 0, 60.0)
        yield probe, raw, compressed
    finally:
        probe.close()
        outputs = [stop_node(raw), stop_node(compressed)]
        context.try_shutdown()
        assert raw.returncode == 0 and compressed.returncode == 0, [o[-4000:] for o in outputs]


def _pace(probe: Probe, count: int) -> None:
    # Let the executor deliver acknowledgements so reliable queues never overflow.
    if count % 20 == 0:
        probe.spin_until(lambda: False, 0.02)


encodings = st.one_of(st.sampled_from(SUPPORTED_ENCODINGS), st.text(max_size=12))


@FUZZ
@given(
    encoding=encodings,
    height=st.integers(0, 40),
    width=st.integers(0, 40),
    step=st.integers(0, 200),
    bigendian=st.integers(0, 1),
    data=st.binary(max_size=6000),
)
def test_malformed_raw_images(fuzz_target, encoding, height, width, step, bigendian, data) -> None:
    probe, raw, _ = fuzz_target
    message = Image(
        height=height, width=width, encoding=encoding, step=step, is_bigendian=bigendian, data=data
    )
    probe.image.publish(message)
    SENT["image"] += 1
    _pace(probe, SENT["image"])
    assert raw.poll() is None


def _compressed_payloads() -> st.SearchStrategy[bytes]:
    noise = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", noise)[1].tobytes()
    png = cv2.imencode(".png", noise)[1].tobytes()
    return st.one_of(
        st.binary(max_size=2000),
        st.integers(0, len(jpeg)).map(lambda n: jpeg[:n]),  # truncated JPEG
        st.integers(0, len(png)).map(lambda n: png[:n]),  # truncated PNG
        st.sampled_from([jpeg, png]),  # valid but face-less
        st.binary(min_size=1, max_size=50).map(lambda junk: jpeg[:200] + junk + jpeg[200:]),
    )


@FUZZ
@given(image_format=st.text(max_size=30), data=_compressed_payloads())
def test_malformed_compressed_images(fuzz_target, image_format, data) -> None:
    probe, _, compressed = fuzz_target
    probe.compressed.publish(CompressedImage(format=image_format, data=data))
    SENT["compressed"] += 1
    _pace(probe, SENT["compressed"])
    assert compressed.poll() is None


finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 600.0])
)


@FUZZ
@given(
    k=st.lists(finite_or_not, min_size=9, max_size=9),
    d=st.lists(finite_or_not, max_size=14),
    model=st.sampled_from(["plumb_bob", "rational_polynomial", "equidistant", "", "bogus"]),
    frame_id=st.sampled_from(["camera_optical_frame", "other_frame", ""]),
)
def test_malformed_camera_info(fuzz_target, k, d, model, frame_id) -> None:
    probe, raw, _ = fuzz_target
    message = CameraInfo(width=640, height=480, distortion_model=model, k=k, d=d)
    message.header.frame_id = frame_id
    probe.camera_info.publish(message)
    SENT["camera_info"] += 1
    _pace(probe, SENT["camera_info"])
    if SENT["camera_info"] % 100 == 0:  # valid frames keep being processed under fuzz
        stamp = 10_000_000_000 + SENT["camera_info"]
        faces = probe.send_and_wait(image_message(astronaut_frame(), stamp), timeout=30.0)
        assert len(faces.faces) == 1
    assert raw.poll() is None


def test_after_fuzzing_every_received_frame_is_accounted_for(fuzz_target) -> None:
    probe, raw, compressed = fuzz_target
    assert sum(SENT.values()) >= 2000, SENT
    stamp = 20_000_000_000
    assert len(probe.send_and_wait(image_message(astronaut_frame(), stamp)).faces) == 1
    ok, jpeg = cv2.imencode(".jpg", astronaut_frame())
    message = CompressedImage(format="jpeg", data=jpeg.tobytes())
    message.header.stamp.sec = 21
    assert len(probe.send_and_wait(message).faces) == 1

    def accounted(node_name: str) -> dict[str, str] | None:
        for array in reversed(probe.received["diagnostics"]):
            for status in array.status:
                if status.name == f"{node_name}: head pose":
                    return {kv.key: kv.value for kv in status.values}
        return None

    def balanced(node_name: str) -> bool:
        values = accounted(node_name)
        if values is None:
            return False
        received = int(values["frames received"])
        settled = int(values["frames processed"]) + int(
            values["frames dropped (newest frame wins)"]
        )
        settled += sum(int(v) for k, v in values.items() if k.startswith("rejected: "))
        rejected = sum(int(v) for k, v in values.items() if k.startswith("rejected: "))
        return received > 0 and rejected > 0 and settled == received

    for name in ("headpose", "headpose_compressed"):
        assert probe.spin_until(lambda n=name: balanced(n), 10.0), accounted(name)
    assert raw.poll() is None and compressed.poll() is None
