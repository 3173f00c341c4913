"""Echo peer for round-trip tests: republish what arrives on ``<topic>`` to ``<topic>/echo``.

Usage: python echo_peer.py TYPE TOPIC [TYPE TOPIC ...], TYPE like ``headpose_msgs/msg/Face``.
Runs in its own process so a round trip crosses two DDS participants; prints ``ready`` once
its subscriptions exist and exits on SIGTERM.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from headpose_ros.messages import message_class


def main() -> None:
    pairs = list(zip(sys.argv[1::2], sys.argv[2::2], strict=True))
    rclpy.init()
    node = Node("echo_peer")
    for type_name, topic in pairs:
        cls = message_class(type_name)
        publisher = node.create_publisher(cls, f"{topic}/echo", 10)
        node.create_subscription(cls, topic, publisher.publish, 10)
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
