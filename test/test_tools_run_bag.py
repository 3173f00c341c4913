"""headpose_bag end to end on sqlite3 and mcap bags that the test writes with rosbags."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import model_factory
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from headpose_ros.core.geometry import quaternion_to_rotation
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
