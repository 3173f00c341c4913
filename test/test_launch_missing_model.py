"""launch_testing: launching with a model folder that holds no model fails, saying which file.

The node must not come up half-configured: it logs the missing file and exits with code 1,
which launch reports; a user sees the reason in the ``ros2 launch`` output.
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
import launch_testing.markers
import pytest
from launch import LaunchDescription


@pytest.mark.launch_test
@launch_testing.markers.keep_alive  # the node exits by itself; keep launch up for the checks
def generate_test_description():
    folder = Path(tempfile.mkdtemp(prefix="headpose_launch_no_model_"))
    (folder / "models").mkdir()
    params_file = folder / "params.yaml"
    params_file.write_text(
        f"/**:\n  ros__parameters:\n    inference:\n      model_dir: {folder / 'models'}\n"
    )
    arguments = {"namespace": "no_model_test", "params_file": str(params_file)}
    description = LaunchDescription(
        [launch_harness.headpose_launch(arguments), launch_testing.actions.ReadyToTest()]
    )
    return description, {"folder": folder}


class TestMissingModel(unittest.TestCase):
    def test_node_says_which_file_is_missing_and_stops(self, proc_info, proc_output, folder):
        expected = f"configure failed: model manifest not found: {folder}/models/manifest.json"
        proc_output.assertWaitFor(expected, process="headpose_node", timeout=120)
        proc_info.assertWaitForShutdown(process="headpose_node", timeout=60)


@launch_testing.post_shutdown_test()
class TestExitCode(unittest.TestCase):
    def test_node_exits_with_code_one(self, proc_info, folder) -> None:
        self.addCleanup(shutil.rmtree, folder, True)
        launch_testing.asserts.assertExitCodes(proc_info, [1], process="headpose_node")
