"""Smoke job until the node lands: one FaceArray crosses DDS between two processes."""

from __future__ import annotations

import subprocess
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from headpose_msgs.msg import Face, FaceArray, Landmark2D

TOPIC = "/headpose/faces"


def publish() -> None:
    """Publish one face array repeatedly until the listener has it and stops this process."""
    rclpy.init()
    node = Node("headpose_smoke_publisher")
    publisher = node.create_publisher(FaceArray, TOPIC, 10)
    message = FaceArray(image_width=640, image_height=480)
    message.header.frame_id = "camera_optical_frame"
    message.faces = [
        Face(
            id="1",
            yaw=0.25,
            landmark_scheme="ibug68",
            attention=0.84,
            landmarks=[Landmark2D(x=float(i), y=float(i), visibility=1.0) for i in range(68)],
        )
    ]
    try:
        for _ in range(200):  # until the listener has matched and stops us
            publisher.publish(message)
            rclpy.spin_once(node, timeout_sec=0.05)
    except ExternalShutdownException:
        pass


def listen() -> None:
    """Start the publisher process, wait for one face array over DDS and print it."""
    rclpy.init()
    node = Node("headpose_smoke_listener")
    received: list[FaceArray] = []
    node.create_subscription(FaceArray, TOPIC, received.append, 10)
    publisher = subprocess.Popen([sys.executable, __file__, "--publish"])
    deadline = time.monotonic() + 20.0
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    publisher.terminate()
    publisher.wait()
    if not received:
        sys.exit("smoke: no FaceArray received within 20 s")
    face = received[0].faces[0]
    print(
        f"smoke: received FaceArray over DDS: {len(received[0].faces)} face, id {face.id}, "
        f"yaw {face.yaw:.2f} rad, {len(face.landmarks)} landmarks, attention {face.attention:.2f}"
    )


if __name__ == "__main__":
    publish() if "--publish" in sys.argv else listen()
