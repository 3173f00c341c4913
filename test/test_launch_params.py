"""launch_testing: a YAML file given as ``params_file:=`` overrides the node's parameters.

The file sets three values away from their defaults, the way a user tunes the node on a robot;
the test reads them back through the node's parameter service and checks their effect: the
disabled outputs have no publisher while the others do, and faces still come out. The launch
also sets ``use_sim_time:=true`` (as for a bag replayed with ``--clock``, here with no clock
published at all): the node takes it as a boolean and still answers every image.
"""

from __future__ import annotations

import shutil
import tempfile
import unittest
from pathlib import Path

import launch_harness
import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
from launch import LaunchDescription
from node_harness import astronaut_frame, image_message
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters

NAMESPACE = "/params_test"
IMAGE_TOPIC = "/params_test/camera/image"
OVERRIDES = """\
/**:
  ros__parameters:
    output:
      pose_array: false
      markers: false
    detector:
      min_score: 0.7
"""


@pytest.mark.launch_test
def generate_test_description():
    folder = Path(tempfile.mkdtemp(prefix="headpose_launch_params_"))
    params_file = folder / "my_headpose.yaml"
    params_file.write_text(OVERRIDES)
    arguments = {
        "namespace": NAMESPACE.strip("/"),
        "image": IMAGE_TOPIC,
        "params_file": str(params_file),
        "use_sim_time": "true",
    }
    description = LaunchDescription(
        [launch_harness.headpose_launch(arguments), launch_testing.actions.ReadyToTest()]
    )
    return description, {"folder": folder}


class TestOverrides(unittest.TestCase):
    def test_yaml_values_are_the_parameters_and_take_effect(self) -> None:
        with launch_harness.probe_on(NAMESPACE, IMAGE_TOPIC) as probe:
            self.assertTrue(probe.wait_for_node(timeout=120.0), f"nobody reads {IMAGE_TOPIC}")
            node = f"{NAMESPACE}/headpose"
            self.assertEqual(launch_harness.lifecycle_state(probe, node), "active")
            client = probe.node.create_client(GetParameters, f"{node}/get_parameters")
            self.assertTrue(probe.spin_until(client.service_is_ready, 30.0))
            request = GetParameters.Request(
                names=[
                    "output.pose_array",
                    "output.markers",
                    "detector.min_score",
                    "output.pose_stamped",
                    "use_sim_time",
                ]
            )
            future = client.call_async(request)
            self.assertTrue(probe.spin_until(future.done, 30.0))
            pose_array, markers, min_score, pose_stamped, sim_time = future.result().values
            self.assertEqual(
                (pose_array.bool_value, markers.bool_value, min_score.double_value),
                (False, False, 0.7),
            )
            self.assertEqual(
                (sim_time.type, sim_time.bool_value), (ParameterType.PARAMETER_BOOL, True)
            )
            self.assertTrue(
                pose_stamped.bool_value, "a value the file leaves alone keeps its default"
            )

            counts = {
                topic: probe.node.count_publishers(f"{NAMESPACE}/{topic}")
                for topic in ("faces", "pose", "poses", "markers")
            }
            self.assertEqual(counts, {"faces": 1, "pose": 1, "poses": 0, "markers": 0})
            faces = probe.send_and_wait(image_message(astronaut_frame(), 3 * 1_000_000_000))
            self.assertEqual(len(faces.faces), 1)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_node_exits_with_code_zero(self, proc_info, folder) -> None:
        self.addCleanup(shutil.rmtree, folder, True)
        launch_testing.asserts.assertExitCodes(proc_info, process="headpose_node")
