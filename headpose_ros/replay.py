"""Replay a rosbag2 (.db3 or .mcap) over DDS, for machines without ``ros2 bag play``.

``headpose_replay BAG`` publishes the bag's topics with their recorded types and timing (the
serialized payloads are forwarded untouched), so a recording can feed the live node exactly as
``ros2 bag play`` would on a full ROS install. ``--lockstep TOPIC`` instead waits, after each
image, for the node's output with the same header stamp on TOPIC: as fast as the node keeps
up, and no frame is ever replaced before the node saw it, which makes a replay reproduce the
offline tool's results frame for frame.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from headpose_ros.dds_profile import use_large_image_profile
from headpose_ros.messages import message_class

__all__ = ["main", "replay"]

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def _stamp(message: Any) -> tuple[int, int]:
    return message.header.stamp.sec, message.header.stamp.nanosec


def replay(
    bag: Path,
    topics: list[str] | None = None,
    rate: float = 1.0,
    lockstep_topic: str | None = None,
    lockstep_timeout_s: float = 10.0,
    remap: dict[str, str] | None = None,
    context: Context | None = None,
) -> dict[str, int]:
    """Publish the bag; return counts of published messages and lockstep time-outs."""
    remap = remap or {}
    node = Node("headpose_replay", context=context)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    counts = {"published": 0, "skipped_unknown_type": 0, "lockstep_timeouts": 0}
    seen_outputs: set[tuple[int, int]] = set()
    if lockstep_topic:
        output_type = message_class("headpose_msgs/msg/FaceArray")
        node.create_subscription(
            output_type, lockstep_topic, lambda m: seen_outputs.add(_stamp(m)), qos
        )
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        publishers: dict[int, Any] = {}
        classes: dict[int, type] = {}
        for connection in connections:
            try:
                classes[connection.id] = message_class(connection.msgtype)
            except (ImportError, AttributeError):
                print(
                    f"replay: skipping {connection.topic}: type {connection.msgtype} unknown here"
                )
                continue
            publishers[connection.id] = node.create_publisher(
                classes[connection.id], remap.get(connection.topic, connection.topic), qos
            )
        _wait_for_subscribers(executor, list(publishers.values()))
        start_wall, start_bag = time.monotonic(), None
        total = sum(c.msgcount for c in connections)
        for connection, timestamp, raw in tqdm(
            reader.messages(connections), total=total, unit="msg", desc="replay"
        ):
            if connection.id not in publishers:
                counts["skipped_unknown_type"] += 1
                continue
            if not lockstep_topic and rate > 0:
                start_bag = timestamp if start_bag is None else start_bag
                due = start_wall + (timestamp - start_bag) / 1e9 / rate
                while (wait := due - time.monotonic()) > 0:
                    executor.spin_once(timeout_sec=wait)
            publishers[connection.id].publish(bytes(raw))
            counts["published"] += 1
            if lockstep_topic and connection.msgtype in IMAGE_TYPES:
                stamp = _stamp(deserialize_message(bytes(raw), classes[connection.id]))
                deadline = time.monotonic() + lockstep_timeout_s
                while stamp not in seen_outputs and time.monotonic() < deadline:
                    executor.spin_once(timeout_sec=0.01)
                if stamp not in seen_outputs:
                    counts["lockstep_timeouts"] += 1
    executor.shutdown()
    node.destroy_node()
    return counts


def _wait_for_subscribers(
    executor: SingleThreadedExecutor, publishers: list[Any], timeout_s: float = 5.0
) -> None:
    """Give discovery a moment so the first messages are not published into the void."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in publishers):
        executor.spin_once(timeout_sec=0.05)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point of ``headpose_replay``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path, help="rosbag2 folder or .mcap/.db3 file")
    parser.add_argument("--topics", nargs="*", help="topics to replay (default: all)")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor; 0 = no waiting")
    parser.add_argument(
        "--lockstep",
        metavar="TOPIC",
        help="after each image wait for the headpose_msgs/FaceArray with its stamp on TOPIC",
    )
    parser.add_argument(
        "--remap",
        nargs="*",
        default=[],
        metavar="FROM:=TO",
        help="publish a bag topic under another name, e.g. /camera/image_raw:=/headpose/image",
    )
    args = parser.parse_args(argv)
    remap = dict(item.split(":=", 1) for item in args.remap)
    print(use_large_image_profile())  # the images are published from this process
    rclpy.init()
    try:
        counts = replay(args.bag, args.topics, args.rate, args.lockstep, remap=remap)
    finally:
        rclpy.try_shutdown()
    print("replay: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if counts["lockstep_timeouts"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
