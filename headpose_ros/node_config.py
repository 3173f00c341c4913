"""Settings of the ROS node itself (transport, outputs, diagnostics), in the core's schema style.

The estimator's settings live in :mod:`headpose_ros.core.config`; these are the ones that only
mean something to a ROS node. Both are declared as ROS parameters with their descriptions and
ranges by :mod:`headpose_ros.node`, and validated by the same
:func:`~headpose_ros.core.config.validate_config`.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headpose_ros.core.config import (
    TYPE_WORDS,
    ConfigError,
    EstimatorConfig,
    SettingSpec,
    config_from_flat,
    iter_settings,
    setting,
    value_in_words,
)
from headpose_ros.core.model_paths import MANIFEST_NAME

__all__ = [
    "DiagnosticsConfig",
    "InputConfig",
    "NodeConfig",
    "OutputConfig",
    "all_settings",
    "configs_from_parameters",
    "parameter_change_problem",
    "parameter_problem",
    "parameter_file_text",
]


@dataclass
class InputConfig:
    """What the node subscribes to and with which quality of service."""

    transport: str = setting(
        "raw",
        "Image transport: 'raw' subscribes to sensor_msgs/Image on 'image'; 'compressed' to "
        "sensor_msgs/CompressedImage (JPEG/PNG) on 'image/compressed'.",
        choices=("raw", "compressed"),
    )
    reliability: str = setting(
        "best_effort",
        "QoS reliability of the image and camera_info subscriptions. 'best_effort' is the "
        "sensor-data profile camera drivers publish with; 'reliable' for reliable publishers "
        "such as a bag replay that must not lose frames.",
        choices=("best_effort", "reliable"),
    )
    queue_depth: int = setting(
        5,
        "Subscription queue depth (5 as in the sensor-data profile). The node always processes "
        "only the newest frame and counts the ones it replaced as dropped; a depth of 1 would "
        "let DDS discard frames before the node can count them.",
        low=1,
        high=100,
    )
    external_boxes: bool = setting(
        False,
        "Take face boxes from an upstream detector (headpose_msgs/FaceArray on 'face_boxes', "
        "box and detection_score used; matched to images by header stamp) instead of running "
        "the built-in detector.",
    )
    external_boxes_max_age_s: float = setting(
        0.2,
        "External boxes are used for an image when their stamp is at most this far from the "
        "image's stamp; otherwise the image is processed with no boxes (counted).",
        low=0.0,
        high=10.0,
    )


@dataclass
class OutputConfig:
    """Optional outputs; the FaceArray on 'faces' is always published."""

    pose_stamped: bool = setting(True, "Publish the main (largest) face on 'pose' (PoseStamped).")
    pose_array: bool = setting(True, "Publish every face's head pose on 'poses' (PoseArray).")
    markers: bool = setting(
        True, "Publish rviz markers on 'markers': head axes, attention arrow, landmarks, label."
    )
    debug_image: bool = setting(
        True,
        "Publish the annotated image on 'debug_image' (drawn only while someone subscribes).",
    )
    tf: bool = setting(
        True,
        "Broadcast TF frames face_<id> and gaze_<id> (REP-155 style) when tf2_ros is available.",
    )


@dataclass
class DiagnosticsConfig:
    """diagnostic_msgs/DiagnosticArray on /diagnostics and its WARN/ERROR thresholds."""

    period_s: float = setting(1.0, "Seconds between diagnostics messages.", low=0.1, high=60.0)
    warn_latency_ms: float = setting(
        100.0, "WARN when the median processing time per frame exceeds this.", low=0.0, high=1e5
    )
    error_latency_ms: float = setting(
        500.0, "ERROR when the median processing time per frame exceeds this.", low=0.0, high=1e5
    )
    warn_drop_ratio: float = setting(
        0.5,
        "WARN when more than this fraction of received frames were dropped (replaced before "
        "processing) or rejected as malformed in the last period.",
        low=0.0,
        high=1.0,
    )
    error_no_frames_s: float = setting(
        5.0,
        "ERROR when the node is active but no image arrived for this many seconds.",
        low=0.1,
        high=3600.0,
    )


@dataclass
class NodeConfig:
    """All node-only settings."""

    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    autostart: bool = setting(
        True,
        "Configure and activate on start-up (plain use, launch files). False leaves the "
        "lifecycle node unconfigured for a lifecycle manager to drive.",
    )


def all_settings() -> list[SettingSpec]:
    """Every ROS parameter of the node: its own settings, then the estimator's."""
    return [*iter_settings(NodeConfig()), *iter_settings(EstimatorConfig())]


def configs_from_parameters(values: dict[str, Any]) -> tuple[EstimatorConfig, NodeConfig]:
    """Both typed configs from flat parameter values; ConfigError names a bad one.

    Upstream boxes (``input.external_boxes``) replace the built-in detector, so they switch
    the estimator's detector backend to "external" whatever ``detector.backend`` says.
    """
    estimator_names = {spec.name for spec in iter_settings(EstimatorConfig())}
    estimator = config_from_flat({k: v for k, v in values.items() if k in estimator_names})
    node = config_from_flat(
        {k: v for k, v in values.items() if k not in estimator_names}, NodeConfig()
    )
    if node.input.external_boxes:
        estimator.detector.backend = "external"
    return estimator, node


#: Settings naming a folder, and the file that must be in it, checked when they are set.
_FOLDER_SETTINGS = {"inference.model_dir": MANIFEST_NAME}


def parameter_problem(name: str, value: Any, specs: dict[str, SettingSpec]) -> str | None:
    """Why a new ROS parameter value is refused before the schema's checks, or ``None``.

    ROS parameters are typed, so unlike ``--set`` strings nothing is converted: an integer is
    accepted for a floating-point setting, nothing else. The answer names the parameter and
    the types in words, and a folder setting must hold its file when it is set, not only at
    the next configure.
    """
    spec = specs.get(name)
    if spec is None:
        return f"unknown parameter {name!r}: this node has no such parameter (see ros2 param list)"
    number_for_float = spec.type is float and type(value) is int
    if type(value) is not spec.type and not number_for_float:
        return f"{name} must be {TYPE_WORDS[spec.type]}, got {value_in_words(value)}"
    needed = _FOLDER_SETTINGS.get(name)
    if needed and value.strip():
        folder = Path(value.strip()).expanduser()
        if not (folder / needed).is_file():
            missing = "does not exist" if not folder.is_dir() else f"holds no {needed}"
            return f"{name}: the folder {str(folder)!r} {missing}"
    return None


def parameter_change_problem(
    current: dict[str, Any], changes: dict[str, Any], specs: dict[str, SettingSpec]
) -> str | None:
    """Why a set of parameter changes is refused (the first problem), or ``None``."""
    for name, value in changes.items():
        problem = parameter_problem(name, value, specs)
        if problem:
            return problem
    try:
        configs_from_parameters({**current, **changes})
    except ConfigError as error:
        return str(error)
    return None


def _allowed(spec: SettingSpec) -> str:
    if spec.choices:
        return f"one of: {', '.join(spec.choices)}"
    if spec.low is not None and spec.high is not None:
        return f"range: [{spec.low:g}, {spec.high:g}]"
    return ""


def parameter_file_text(node_name: str = "/**") -> str:
    """Generate the documented parameter file (config/headpose.yaml) from the schemas."""
    lines = [
        "# headpose_ros parameters: every parameter of the node with its default value.",
        "# Generated from headpose_ros/node_config.py and headpose_ros/core/config.py by",
        "#   python -m headpose_ros.node_config > config/headpose.yaml",
        "# (test/test_node_parameters.py checks that it is up to date). Floating-point",
        "# parameters need a decimal point (1.0, not 1): ROS parameters are typed.",
        "# '/**' applies the file to the node whatever its name and namespace.",
        f"{json.dumps(node_name)}:",
        "  ros__parameters:",
    ]
    open_sections: list[str] = []
    for spec in all_settings():
        *sections, leaf = spec.name.split(".")
        common = 0
        while (
            common < min(len(sections), len(open_sections))
            and sections[common] == open_sections[common]
        ):
            common += 1
        for depth, section in enumerate(sections[common:], start=common):
            lines.append(f"{'  ' * (depth + 2)}{section}:")
        open_sections = sections
        indent = "  " * (len(sections) + 2)
        comment = spec.description + (f" ({_allowed(spec)})" if _allowed(spec) else "")
        lines += textwrap.wrap(
            comment,
            96 - len(indent),
            initial_indent=f"{indent}# ",
            subsequent_indent=f"{indent}# ",
        )
        lines.append(f"{indent}{leaf}: {json.dumps(spec.default)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(parameter_file_text(), end="")
