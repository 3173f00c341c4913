"""headpose_bag end to end on sqlite3 and mcap bags that the test writes with rosbags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import hostile
import model_factory
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from headpose_ros.core.geometry import quaternion_to_rotation
from headpose_ros.core.image_codec import SUPPORTED_ENCODINGS
from headpose_ros.messages import rosbags_factory
from headpose_ros.tools import run_bag
from headpose_ros.tools.annotations import read_pts
from headpose_ros.tools.bag_messages import build_typestore

# Fixtures shared with the other model-using test modules (see model_factory).
model_dir = model_factory.model_dir

FRAMES = 5
CORRUPT_FRAME = 2


def write_bag(
    path: Path, data_300w: Path, storage: str, compressed: bool, zero_k: bool = False
) -> None:
    store = build_typestore()
    make = rosbags_factory(store)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    files = sorted((data_300w / "helen_test").glob("*.jpg"))[:FRAMES]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        info_conn = writer.add_connection(
            "/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store
        )
        image_conn = writer.add_connection("/camera/image", image_type, typestore=store)
        gt_conn = writer.add_connection(
            "/ground_truth/faces", "headpose_msgs/msg/FaceArray", typestore=store
        )
        for i, file in enumerate(files):
            image = cv2.imread(str(file))
            height, width = image.shape[:2]
            t = 2_000_000_000 + i * 100_000_000
            stamp = make("builtin_interfaces/msg/Time", sec=t // 10**9, nanosec=t % 10**9)
            header = make("std_msgs/msg/Header", stamp=stamp, frame_id="camera_optical")
            k = (
                np.zeros(9)
                if zero_k
                else np.array([500.0, 0, width / 2, 0, 500.0, height / 2, 0, 0, 1])
            )
            info = make(
                "sensor_msgs/msg/CameraInfo",
                header=header,
                width=width,
                height=height,
                k=k,
                d=np.zeros(5),
            )
            writer.write(info_conn, t, store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            if compressed:
                data = (
                    cv2.imencode(".jpg", image)[1].ravel()
                    if i != CORRUPT_FRAME
                    else np.frombuffer(b"\xff\xd8junk", np.uint8)
                )
                msg = make(image_type, header=header, format="jpeg", data=data)
            else:
                data = np.frombuffer(image.tobytes(), np.uint8)
                if i == CORRUPT_FRAME:
                    data = data[:1000]  # truncated
                msg = make(
                    image_type,
                    header=header,
                    height=height,
                    width=width,
                    encoding="bgr8",
                    step=width * 3,
                    data=data,
                )
            writer.write(image_conn, t, store.serialize_cdr(msg, image_type))
            landmarks = [
                make("headpose_msgs/msg/Landmark2D", x=float(x), y=float(y), visibility=1.0)
                for x, y in read_pts(file.with_suffix(".pts"))
            ]
            face = make(
                "headpose_msgs/msg/Face",
                id="gt",
                landmarks=landmarks,
                landmark_scheme="ibug68",
            )
            truth = make(
                "headpose_msgs/msg/FaceArray",
                header=header,
                image_width=width,
                image_height=height,
                faces=[face],
            )
            writer.write(gt_conn, t, store.serialize_cdr(truth, "headpose_msgs/msg/FaceArray"))


@pytest.mark.parametrize(("storage", "compressed"), [("sqlite3", False), ("mcap", True)])
def test_bag_round_trip(
    data_300w: Path, model_dir: Path, tmp_path: Path, storage: str, compressed: bool
) -> None:
    bag = tmp_path / "input"
    write_bag(bag, data_300w, storage, compressed)
    output = tmp_path / "output"
    args = [
        str(bag),
        "--output",
        str(output),
        "--model-dir",
        str(model_dir),
        "--gt-topic",
        "/ground_truth/faces",
    ]
    args += ["--set", "detector.interval_frames=1"]  # consecutive frames are unrelated photos
    assert run_bag.main(args) == 0
    assert any(p.suffix == (".mcap" if storage == "mcap" else ".db3") for p in output.iterdir())

    with Reader(output) as reader:
        store = build_typestore(reader.connections)
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {
            "/camera/camera_info": FRAMES,
            "/camera/image": FRAMES,
            "/ground_truth/faces": FRAMES,
            "/headpose/faces": FRAMES - 1,
            "/headpose/poses": FRAMES - 1,
            "/headpose/markers": FRAMES - 1,
        }
        input_stamps, face_ids = [], {}
        for conn, _, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == "/camera/image":
                input_stamps.append((msg.header.stamp.sec, msg.header.stamp.nanosec))
            elif conn.topic == "/headpose/faces":
                assert (msg.header.stamp.sec, msg.header.stamp.nanosec) in input_stamps
                assert msg.header.frame_id == "camera_optical"
                face_ids[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = {
                    f.id for f in msg.faces
                }
                for face in msg.faces:
                    assert len(face.landmarks) == 68 and face.landmark_scheme == "ibug68"
                    q = face.pose.orientation
                    rotation = quaternion_to_rotation(q.x, q.y, q.z, q.w)
                    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
            elif conn.topic == "/headpose/markers":
                shown = {m.ns for m in msg.markers if m.action == 0}
                stamp = msg.markers[0].header.stamp
                ids = face_ids[(stamp.sec, stamp.nanosec)]
                assert shown == {f"face_{i}" for i in ids}
                assert all(m.ns not in shown for m in msg.markers if m.action == 2)

    assert sum(len(ids) for ids in face_ids.values()) >= FRAMES - 1
    report = output.with_name("output_report")
    records = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert len(records) == FRAMES
    assert [r["status"] for r in records].count("unreadable_image") == 1
    summary = json.loads((report / "summary.json").read_text())
    assert summary["ground_truth"]["landmark_nme_interocular"]["faces"] == FRAMES - 1
    assert summary["ground_truth"]["unmatched"] == 1
    assert (report / "report.md").read_text().startswith("# headpose_bag report")
    assert (report / "timeline.png").is_file()


def test_zero_intrinsics_in_camera_info_are_counted(
    data_300w: Path, model_dir: Path, tmp_path: Path
) -> None:
    bag = tmp_path / "input"
    write_bag(bag, data_300w, "sqlite3", compressed=False, zero_k=True)
    assert (
        run_bag.main([str(bag), "--output", str(tmp_path / "out"), "--model-dir", str(model_dir)])
        == 0
    )
    summary = json.loads((tmp_path / "out_report" / "summary.json").read_text())
    assert summary["estimator_counters"]["event:invalid_intrinsics"] == FRAMES
    records = [
        json.loads(line)
        for line in (tmp_path / "out_report" / "results.jsonl").read_text().splitlines()
    ]
    assert all(not f["position_is_metric"] for r in records for f in r["faces"])


def test_bag_errors_are_clear(
    data_300w: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bag = tmp_path / "input"
    write_bag(bag, data_300w, "mcap", compressed=False)
    assert run_bag.main([str(bag), "--image-topic", "/nope", "--model-dir", str(model_dir)]) == 2
    assert "/nope" in capsys.readouterr().err
    assert run_bag.main([str(tmp_path / "missing_bag"), "--model-dir", str(model_dir)]) == 2
    (tmp_path / "input_headpose").mkdir()
    assert run_bag.main([str(bag), "--model-dir", str(model_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def write_hostile_bag(
    path: Path, data_300w: Path, compressed: bool, hostile_too: bool
) -> list[bool | str]:
    """A bag mixing a real face with bombs, every encoding and CameraInfo of every kind.

    Returns, per image message, whether its face must be metric, or "bomb", or "decoded".
    Without ``hostile_too`` it holds only the real face's first frame (the clean reference).
    """
    store = build_typestore()
    make = rosbags_factory(store)
    face = cv2.imread(str(sorted((data_300w / "helen_test").glob("*.jpg"))[0]))
    height, width = face.shape[:2]
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    k = np.array([500.0, 0.0, width / 2, 0.0, 500.0, height / 2, 0.0, 0.0, 1.0])

    def info(model: str, coefficients: int, size: tuple[int, int], scale: float = 1.0) -> Any:
        return make(
            "sensor_msgs/msg/CameraInfo",
            width=size[0],
            height=size[1],
            distortion_model=model,
            d=np.full(coefficients, 0.01),
            k=np.where(k == 1.0, 1.0, k * scale),
        )

    def raw(pixels: np.ndarray, encoding: str, height: int, width: int) -> Any:
        step = width * hostile.pixel_bytes(encoding)
        data = np.frombuffer(pixels.tobytes(), np.uint8)
        return make(
            image_type, height=height, width=width, encoding=encoding, step=step, data=data
        )

    def image(pixels: np.ndarray) -> Any:
        if compressed:
            return make(image_type, format="jpeg", data=cv2.imencode(".jpg", pixels)[1].ravel())
        return raw(pixels, "bgr8", *pixels.shape[:2])

    frames = [(info("plumb_bob", 5, (width, height)), image(face), True)]
    if hostile_too:
        frames += [
            (info("equidistant", 4, (width, height)), image(face), True),
            (info("rational_polynomial", 8, (2 * width, 2 * height), 2.0), image(face), True),
            (info("inverse_brown_conrady", 5, (width, height)), image(face), False),
            (info("plumb_bob", 5, (1280, 720)), image(face), False),
        ]
        if compressed:
            for bomb in (
                hostile.png_bomb(50_000, 50_000),
                hostile.jpeg_bomb(50_000, 50_000),
                hostile.other_bomb("tiff", 30_000, 30_000),
            ):
                bomb_message = make(image_type, format="png", data=np.frombuffer(bomb, np.uint8))
                frames.append((None, bomb_message, "bomb"))
        else:
            frames.append((None, raw(np.zeros(64, np.uint8), "rgb8", 50_000, 50_000), "bomb"))
            noise = np.random.default_rng(0).integers(0, 255, 64 * 64 * 4, dtype=np.uint8)
            for encoding in SUPPORTED_ENCODINGS:  # valid images of every encoding, no face
                pixels = noise[: 64 * 64 * hostile.pixel_bytes(encoding)]
                frames.append((None, raw(pixels, encoding, 64, 64), "decoded"))
    with Writer(path, version=9) as writer:
        info_topic = writer.add_connection(
            "/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store
        )
        image_topic = writer.add_connection("/cam/image", image_type, typestore=store)
        for index, (camera, message, _) in enumerate(frames):
            t = 1_000_000_000 + index * 100_000_000
            stamp = make("builtin_interfaces/msg/Time", sec=t // 10**9, nanosec=t % 10**9)
            header = make("std_msgs/msg/Header", stamp=stamp, frame_id="cam")
            if camera is not None:
                camera.header = header
                raw_info = store.serialize_cdr(camera, "sensor_msgs/msg/CameraInfo")
                writer.write(info_topic, t, raw_info)
            message.header = header
            writer.write(image_topic, t, store.serialize_cdr(message, image_type))
    return [metric for _, _, metric in frames]


@pytest.mark.parametrize("compressed", [False, True])
def test_a_bag_of_hostile_messages(
    data_300w: Path, model_dir: Path, tmp_path: Path, compressed: bool
) -> None:
    expected = write_hostile_bag(tmp_path / "hostile", data_300w, compressed, hostile_too=True)
    write_hostile_bag(tmp_path / "clean", data_300w, compressed, hostile_too=False)
    peaks = {}
    for name in ("clean", "hostile"):
        peaks[name], _ = hostile.peak_rss_of_tool(
            "run_bag",
            str(tmp_path / name),
            "--model-dir",
            str(model_dir),
            "--set",
            "detector.interval_frames=1",
        )
    mb = {name: f"{peak / 2**20:.0f} MB" for name, peak in peaks.items()}
    print(f"\nheadpose_bag peak RSS: clean bag {mb['clean']}, hostile bag {mb['hostile']}")
    assert peaks["hostile"] - peaks["clean"] < 200 * 2**20
    report = tmp_path / "hostile_headpose_report"
    records = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert len(records) == len(expected)
    for record, outcome in zip(records, expected, strict=True):
        if outcome == "bomb":
            assert record["status"] == "unreadable_image", record
            assert "max_image_pixels" in record["skip_detail"], record["skip_detail"]
        elif outcome == "decoded":
            assert record["status"] in ("ok", "no_faces"), record
        else:
            (face,) = record["faces"]
            assert face["position_is_metric"] == outcome, record
            if not outcome:  # flagged with the reason: the CameraInfo's, or the frame's event
                assert record["no_intrinsics_because"] or any(
                    e.startswith("invalid_intrinsics") and "1280x720" in e
                    for e in record["events"]
                ), record
    counters = json.loads((report / "summary.json").read_text())["estimator_counters"]
    assert counters["camera_info_rejected:unsupported_model"] == 1
    assert counters["event:invalid_intrinsics"] >= 2  # the refused model, the 1280x720 one
    assert counters["event:intrinsics_scaled"] == 1
    assert counters["unreadable:image_too_large"] == (3 if compressed else 1)
