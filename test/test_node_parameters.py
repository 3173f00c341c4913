"""Every node parameter is declared with a description and its range, and documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from headpose_ros.node_config import all_settings, parameter_file_text

pytest.importorskip("headpose_msgs.msg", reason="headpose_msgs is not built (scripts/setup.sh)")
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_config_file_is_generated_from_the_current_schema() -> None:
    committed = (REPO_ROOT / "config" / "headpose.yaml").read_text()
    assert committed == parameter_file_text(), (
        "config/headpose.yaml is stale: python -m headpose_ros.node_config > config/headpose.yaml"
    )


def test_config_file_holds_every_parameter_with_its_default() -> None:
    loaded = yaml.safe_load((REPO_ROOT / "config" / "headpose.yaml").read_text())
    values = loaded["/**"]["ros__parameters"]
    for spec in all_settings():
        node = values
        for part in spec.name.split("."):
            node = node[part]
        assert node == spec.default, spec.name


def test_node_declares_every_setting_with_description_and_range(ros_context) -> None:
    from headpose_ros.node import HeadPoseNode

    node = HeadPoseNode(context=ros_context)
    try:
        specs = {spec.name: spec for spec in all_settings()}
        declared = {
            name: descriptor
            for name, descriptor in zip(specs, node.describe_parameters(list(specs)), strict=True)
        }
        for name, spec in specs.items():
            descriptor = declared[name]
            assert descriptor.description == spec.description and len(spec.description) > 20
            if spec.type is int and spec.low is not None:
                assert descriptor.integer_range[0].from_value == spec.low
            if spec.type is float and spec.low is not None:
                assert descriptor.floating_point_range[0].to_value == spec.high
            if spec.choices:
                assert all(choice in descriptor.additional_constraints for choice in spec.choices)
        assert node.get_parameter("autostart").value is True
    finally:
        node.destroy_node()
