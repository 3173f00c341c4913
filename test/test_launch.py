"""launch_testing check of launch/headpose.launch.py, for machines with a real ROS 2 install.

The PyPI ROS wheels have no launch/launch_testing, so here this module is skipped; the same
behaviour (node starts with the shipped parameters, auto-activates, publishes faces) is covered
by test/test_node_integration.py, which starts the executable as a subprocess.
"""

from __future__ import annotations

import unittest
from pathlib import Path

import pytest

pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed (no ROS 2 launch wheels on PyPI)"
)
import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import rclpy  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from headpose_msgs.msg import FaceArray  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "headpose.launch.py"


@pytest.mark.launch_test
def generate_test_description():
    headpose = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"namespace": "launch_test", "image": "/launch_test/image"}.items(),
    )
    return launch.LaunchDescription([headpose, launch_testing.actions.ReadyToTest()])


class TestLaunchedNodePublishesFaces(unittest.TestCase):
    def test_an_image_yields_a_face_array_with_its_header(self) -> None:
        rclpy.init()
        node = Node("launch_test_probe")
        received: list[FaceArray] = []
        node.create_subscription(FaceArray, "/launch_test/faces", received.append, 10)
        publisher = node.create_publisher(Image, "/launch_test/image", qos_profile_sensor_data)
        image = Image(height=240, width=320, encoding="bgr8", step=960, data=bytes(240 * 960))
        image.header.frame_id = "camera_optical_frame"
        try:
            for _ in range(300):
                publisher.publish(image)
                rclpy.spin_once(node, timeout_sec=0.1)
                if received:
                    break
            self.assertTrue(received, "no FaceArray from the launched node within 30 s")
            self.assertEqual(received[0].header.frame_id, "camera_optical_frame")
        finally:
            node.destroy_node()
            rclpy.shutdown()
