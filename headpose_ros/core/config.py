"""One typed settings schema for the estimator, shared by the offline tools and the ROS node.

Every setting is a dataclass field carrying a description and its allowed range or choices in
``metadata``. The node declares its ROS parameters from :func:`iter_settings` (so the
descriptions and ranges shown by ``ros2 param describe`` are these ones), the offline tools
read YAML files and ``--set section.name=value`` overrides through :func:`config_from_flat`,
and both get the same validation errors for the same bad value.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from headpose_ros.core.image_codec import DEFAULT_MAX_PIXELS

__all__ = [
    "ConfigError",
    "DetectorConfig",
    "EstimatorConfig",
    "InferenceConfig",
    "PoseConfig",
    "SettingSpec",
    "SmoothingConfig",
    "TYPE_WORDS",
    "TrackingConfig",
    "config_from_flat",
    "config_to_flat",
    "setting",
    "iter_settings",
    "validate_config",
    "value_in_words",
]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|tensorrt(:\d+)?)$")
#: Any settings dataclass of this schema style (EstimatorConfig, the node's NodeConfig).
ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A setting has the wrong type or is outside its allowed range; the message says which."""


def setting(
    default: Any,
    description: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: re.Pattern[str] | None = None,
) -> Any:
    """Make a dataclass field carrying the metadata that validation and parameters read."""
    metadata = {
        "description": description,
        "low": low,
        "high": high,
        "choices": choices,
        "pattern": pattern,
    }
    return field(default=default, metadata=metadata)


@dataclass
class DetectorConfig:
    """Face detection: which detector, how often it runs while faces are tracked."""

    backend: str = setting(
        "mediapipe",
        "Face detector: 'mediapipe' (MediaPipe BlazeFace, installed from PyPI) or 'external' "
        "(boxes only come from the caller, e.g. an upstream detector topic).",
        choices=("mediapipe", "external"),
    )
    model_selection: int = setting(
        0,
        "MediaPipe model: 0 = short range (128 px input), the one that finds turned heads: "
        "run on the tile pyramid it finds 99-100% of the faces with |yaw| < 60 degrees and "
        "most profiles in benchmarks/bench_detectors.py; 1 = full range (192 px input), which "
        "misses most faces turned beyond 30 degrees at any scale and reports no face below a "
        "score of 0.5.",
        low=0,
        high=1,
    )
    smallest_face_px: float = setting(
        40.0,
        "Smallest face (landmark-box height, pixels) the detector searches for: below the "
        "whole frame it also runs on square tiles down to 2.75 times this side (0 = whole "
        "frame only). Each halving roughly quadruples the detector's time (it runs off the "
        "tracking thread when detector.asynchronous is true).",
        low=0.0,
        high=4096.0,
    )
    mirror_region_share: float = setting(
        0.0,
        "Regions (the whole frame and its tiles) whose side is at least this share of the "
        "frame's shorter side are also searched in the mirror image: BlazeFace is not "
        "mirror-symmetric in practice and finds some turned heads only there. 0 = every "
        "region, which in benchmarks/bench_detectors.py publishes 98.0% of the far faces "
        "(24-40 px, turned up to profile) where 0.5 (the whole frame and the largest tiles) "
        "publishes 95.3-96.9%, for 1.6-2 times the detector's time; above 1 = no mirror "
        "search. A face only the mirror shows must be seen clearly by the network.",
        low=0.0,
        high=100.0,
    )
    min_score: float = setting(
        0.5,
        "Detections below this confidence are ignored. Turned heads score low: 0.3 finds "
        "a few more of them (pasted AFLW faces turned beyond 60 degrees in "
        "benchmarks/bench_detectors.py: 97.5% published against 97.0%), but it also passes a "
        "few false faces that the network does not rule out (0.10 against 0.06 per pasted "
        "AFLW scene, 0.21 against 0.11 per far-face scene). Detections under 0.5 "
        "must be seen clearly by the network. The full-range model reports none below 0.5.",
        low=0.0,
        high=1.0,
    )
    interval_frames: int = setting(
        10,
        "While every face is tracked, start the detector only every this many frames (1 = "
        "every frame; with detector.asynchronous, counted from the end of its last run, so "
        "that a run longer than the interval does not keep it busy all the time); it also "
        "starts whenever a track is lost or there is no track.",
        low=1,
        high=1000,
    )
    asynchronous: bool = setting(
        True,
        "Run the detector on its own thread: a frame hands it a copy of the image when a run "
        "is due and the thread is idle and, unless it has no face to track, does not wait "
        "for it: the faces it finds join tracking at the first frame after it finishes. "
        "false = run it inside the frame that "
        "needs it (deterministic: replays and offline runs give identical results; the "
        "offline tools use this).",
    )
    min_face_px: float = setting(
        16.0,
        "Faces whose box is smaller than this (pixels, shorter side) are skipped and counted.",
        low=1.0,
        high=4096.0,
    )
    max_faces: int = setting(
        16,
        "At most this many faces are processed per frame (highest detector score first); the "
        "rest are counted as skipped 'too_many_faces'. 16 holds a group of twelve people "
        "with room for newcomers.",
        low=1,
        high=64,
    )


@dataclass
class TrackingConfig:
    """Track management: matching detections to tracks, confirmation and drop."""

    iou_threshold: float = setting(
        0.3, "Minimum box overlap (IoU) for a detection to continue a track.", low=0.0, high=1.0
    )
    centre_distance: float = setting(
        0.5,
        "If the overlap is too small, a detection still continues a track when the box centres "
        "are closer than this fraction of the track box's side.",
        low=0.0,
        high=5.0,
    )
    confirm_frames: int = setting(
        1,
        "A new track is reported after this many consecutive frames with evidence.",
        low=1,
        high=100,
    )
    drop_frames: int = setting(
        3,
        "A track is dropped after this many consecutive frames without evidence (no matching "
        "detection when the detector ran, or landmarks too unreliable to track).",
        low=1,
        high=1000,
    )
    min_track_visibility: float = setting(
        0.3,
        "A tracked face whose mean landmark visibility falls below this counts as lost for the "
        "frame, and the detector runs on the next frame.",
        low=0.0,
        high=1.0,
    )
    deterministic_ids: bool = setting(
        False,
        "Number track ids 1, 2, 3, ... from each reset (replays and tests give the same ids) "
        "instead of random 8-hex-digit ids that do not repeat across runs.",
    )


@dataclass
class InferenceConfig:
    """The network: model files, execution device and mode."""

    model_dir: str = setting(
        "",
        "Folder holding manifest.json and the model files; empty = the models shipped with the "
        "package (see headpose_ros.core.model_paths).",
    )
    device: str = setting(
        "auto",
        "onnxruntime device: auto (CUDA when available, else CPU with a warning), cpu, cuda, "
        "cuda:N, tensorrt or tensorrt:N.",
        pattern=_DEVICE_PATTERN,
    )
    precision: str = setting(
        "auto",
        "Network arithmetic: auto (the model's int8 file on the CPU when the manifest lists one, "
        "float32 on a GPU), float32, or int8 (CPU only). The int8 file is the float network "
        "statically quantised after training; on a 2-core CPU it runs in about two thirds of the "
        "time, with the float model's validation accuracy (see the model card).",
        choices=("auto", "float32", "int8"),
    )
    threads: int = setting(
        2,
        "onnxruntime intra-op threads (0 = onnxruntime decides, usually all cores).",
        low=0,
        high=256,
    )
    encoder_only: bool = setting(
        False,
        "Head pose only: run the encoder model (no heatmaps, no landmarks, no OR). Tracking then "
        "follows the mean face placed by the network's alignment pose p^AE.",
    )
    use_or: bool = setting(
        True,
        "Refine landmarks with the occlusion-aware regressor when the model ships one "
        "('or' file).",
    )
    mirror_average: bool = setting(
        True,
        "Run every crop and its mirror image as one batch and average the two answers (pose, "
        "heatmaps, visibility). Chosen on validation faces: 300-W NME 7.4% -> 6.4% and AFLW "
        "yaw MAE 9.9 -> 9.2 deg (an early checkpoint of the shipped model), for about twice "
        "the network's cost. False halves it.",
    )
    verify_hashes: bool = setting(
        True, "Check every model file against the SHA-256 in manifest.json at load time."
    )


@dataclass
class PoseConfig:
    """Metric pose and attention."""

    visibility_threshold: float = setting(
        0.5, "Landmarks with visibility below this are left out of PnP.", low=0.0, high=1.0
    )
    min_pnp_points: int = setting(
        6, "Skip PnP (orientation only) when fewer visible landmarks remain.", low=4, high=68
    )
    attention_max_angle_deg: float = setting(
        60.0,
        "Attention is 1 when the head faces the camera and falls linearly to 0 at this angle "
        "between the head's forward axis and the ray to the camera.",
        low=1.0,
        high=180.0,
    )


@dataclass
class SmoothingConfig:
    """One-euro temporal smoothing of pose and landmarks, driven by frame timestamps."""

    enabled: bool = setting(False, "Smooth each track's pose and landmarks over time.")
    min_cutoff_hz: float = setting(
        1.0,
        "One-euro minimum cutoff frequency: lower = smoother when still.",
        low=1e-3,
        high=100.0,
    )
    beta: float = setting(
        0.05,
        "One-euro speed coefficient: higher = less lag when moving fast.",
        low=0.0,
        high=100.0,
    )
    derivative_cutoff_hz: float = setting(
        1.0, "Cutoff frequency for the speed estimate.", low=1e-3, high=100.0
    )


@dataclass
class EstimatorConfig:
    """All settings of :class:`headpose_ros.core.pipeline.HeadPoseEstimator`."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    min_image_side: int = setting(
        32,
        "Frames whose shorter side is below this (pixels) are skipped and counted.",
        low=1,
        high=100000,
    )
    max_image_pixels: int = setting(
        DEFAULT_MAX_PIXELS,
        "Images declaring more pixels than this (width x height, read from the header of "
        "compressed images before decoding) are rejected and counted: a small PNG or JPEG may "
        "declare 30000x30000 pixels and take gigabytes to decode.",
        low=1,
        high=4_000_000_000,
    )


@dataclass(frozen=True)
class SettingSpec:
    """One leaf setting: its dotted name, type, default, description and allowed values."""

    name: str
    type: type
    default: Any
    description: str
    low: float | None
    high: float | None
    choices: tuple[str, ...] | None


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
#: Setting types as a user reads them in an error message.
TYPE_WORDS = {
    bool: "a boolean (true or false)",
    int: "an integer",
    float: "a floating-point number (e.g. 1.0)",
    str: "a string",
}


def value_in_words(value: Any) -> str:
    """Describe a given value with its type, for error messages: "the string 'abc'"."""
    kinds = {bool: "the boolean", int: "the integer", float: "the number", str: "the string"}
    if value is None:
        return "no value"
    for kind, words in kinds.items():
        if type(value) is kind:
            return f"{words} {value!r}"
    if isinstance(value, list | tuple):
        return f"a list {list(value)!r}"
    return f"a value of type {type(value).__name__} ({value!r})"


def _leaf_fields(section: Any, prefix: str) -> Iterator[tuple[str, dataclasses.Field, Any]]:
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_fields(value, f"{prefix}{item.name}.")
        else:
            yield f"{prefix}{item.name}", item, value


def iter_settings(config: EstimatorConfig | None = None) -> Iterator[SettingSpec]:
    """Every leaf setting, in declaration order, with defaults taken from ``config`` if given."""
    for name, item, value in _leaf_fields(config or EstimatorConfig(), ""):
        meta = item.metadata
        yield SettingSpec(
            name=name,
            type=_TYPES[item.type] if isinstance(item.type, str) else item.type,
            default=value,
            description=meta["description"],
            low=meta["low"],
            high=meta["high"],
            choices=meta["choices"],
        )


def _check(name: str, item: dataclasses.Field, value: Any) -> None:
    expected = _TYPES[item.type] if isinstance(item.type, str) else item.type
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {TYPE_WORDS[expected]}, got {value_in_words(value)}")
    meta = item.metadata
    if expected in (int, float):
        if value != value:  # NaN
            raise ConfigError(f"{name} must be a number, got NaN")
        if meta["low"] is not None and value < meta["low"]:
            raise ConfigError(f"{name} must be >= {meta['low']}, got {value}")
        if meta["high"] is not None and value > meta["high"]:
            raise ConfigError(f"{name} must be <= {meta['high']}, got {value}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {list(meta['choices'])}, got {value!r}")
    if meta["pattern"] is not None and not meta["pattern"].match(value):
        raise ConfigError(f"{name}={value!r} is not valid: {meta['description']}")


def validate_config(config: EstimatorConfig) -> EstimatorConfig:
    """Raise :class:`ConfigError` naming the first invalid setting; return ``config`` if valid."""
    for name, item, value in _leaf_fields(config, ""):
        _check(name, item, value)
    return config


def _coerce(name: str, item: dataclasses.Field, value: Any) -> Any:
    """Turn strings from ``--set`` or ROS parameters of a compatible type into the field type."""
    expected = _TYPES[item.type] if isinstance(item.type, str) else item.type
    if isinstance(value, str) and expected is not str:
        text = value.strip().lower()
        try:
            if expected is bool:
                if text in ("true", "1", "yes", "on"):
                    return True
                if text in ("false", "0", "no", "off"):
                    return False
                raise ValueError(text)
            return expected(text)
        except ValueError as error:
            raise ConfigError(
                f"{name} must be {TYPE_WORDS[expected]}, got {value_in_words(value)}"
            ) from error
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_from_flat(values: Mapping[str, Any], base: ConfigT | None = None) -> ConfigT:
    """Apply ``{"section.name": value}`` (or nested dicts, as in a YAML file) and validate.

    ``base`` (default: a fresh :class:`EstimatorConfig`) may be any settings dataclass of
    this schema style, e.g. the ROS node's own; it is copied, never modified. Unknown names
    are an error, not ignored: a typo in a parameter file must not silently leave a default.
    """
    config = copy.deepcopy(base if base is not None else EstimatorConfig())
    flat = _flatten(values)
    fields = {name: (item, value) for name, item, value in _leaf_fields(config, "")}
    for name, value in flat.items():
        if name not in fields:
            raise ConfigError(f"unknown setting {name!r}; known: {sorted(fields)}")
        item, _ = fields[name]
        section = config
        *path, leaf = name.split(".")
        for part in path:
            section = getattr(section, part)
        setattr(section, leaf, _coerce(name, item, value))
    return validate_config(config)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_to_flat(config: EstimatorConfig) -> dict[str, Any]:
    """``{"section.name": value}`` for every leaf setting (for reports and parameter files)."""
    return {name: value for name, _, value in _leaf_fields(config, "")}
