"""launch_testing of the installed headpose.launch.py: its defaults, and remaps with a namespace.

Each run starts the launch file as ``ros2 launch headpose_ros headpose.launch.py [args]`` would
(found through the ament index; the node auto-activates), sends a real face image on the
input topic the arguments name, and checks that the node is *active*, answers with a FaceArray
stamped with that image's header, listens on the remapped topic only, and exits with code 0
when launch shuts it down. Skipped, with the reason, where the launch tools are not installed.
"""

from __future__ import annotations

import unittest

import launch_harness
import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
from launch import LaunchDescription
from node_harness import astronaut_frame, image_message

SECOND = 1_000_000_000

#: (launch arguments, node namespace, image topic the node must read, topics it must not read)
RUNS = [
    ({}, "/headpose", "/camera/image_raw", []),
    (
        {
            "namespace": "cam1",
            "image": "/cam1/color/image_raw",
            "camera_info": "/cam1/color/camera_info",
        },
        "/cam1",
        "/cam1/color/image_raw",
        ["/camera/image_raw", "/cam1/image"],
    ),
]


@pytest.mark.launch_test
@launch_testing.parametrize("arguments, namespace, image_topic, unused_topics", RUNS)
def generate_test_description(arguments, namespace, image_topic, unused_topics):
    return LaunchDescription(
        [launch_harness.headpose_launch(arguments), launch_testing.actions.ReadyToTest()]
    )


class TestLaunchedNode(unittest.TestCase):
    def test_active_node_answers_with_the_image_header(
        self, namespace, image_topic, unused_topics
    ) -> None:
        with launch_harness.probe_on(namespace, image_topic) as probe:
            self.assertTrue(probe.wait_for_node(timeout=120.0), f"nobody reads {image_topic}")
            state = launch_harness.lifecycle_state(probe, f"{namespace}/headpose")
            self.assertEqual(state, "active")
            faces = probe.send_and_wait(image_message(astronaut_frame(), 7 * SECOND))
            self.assertEqual(
                (faces.header.stamp.sec, faces.header.frame_id), (7, "demo_camera_optical_frame")
            )
            self.assertEqual(len(faces.faces), 1, "the shipped model finds the astronaut's face")
            for topic in unused_topics:
                self.assertEqual(probe.node.count_subscribers(topic), 0, topic)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_node_exits_with_code_zero(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, process="headpose_node")
