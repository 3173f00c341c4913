"""onnxruntime sessions for the MNN (or its encoder alone), built from the model manifest.

All faces of a frame go through one ``run`` call (the batch dimension is dynamic), because on
a CPU one call with N crops costs far less than N calls, and on a GPU it is the only way to
keep the device busy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from headpose_ros.core.config import ConfigError, InferenceConfig
from headpose_ros.core.geometry import CROP_FOCAL_FACTOR
from headpose_ros.core.manifest import INT8_SUFFIX, ModelFileError, ModelManifest, load_manifest
from headpose_ros.core.model_paths import MANIFEST_NAME, resolve_model_dir

__all__ = [
    "LoadedModel",
    "ModelRunner",
    "NetworkOutputs",
    "load_model",
    "mirror_mean",
    "network_role",
    "resolve_providers",
]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkOutputs:
    """One batch of network outputs; decoder outputs are ``None`` in encoder-only mode."""

    pose_ed: np.ndarray
    pose_ae: np.ndarray
    heatmaps: np.ndarray | None
    visibility: np.ndarray | None


@dataclass(frozen=True)
class LoadedModel:
    """A validated manifest with the absolute paths of its files."""

    manifest: ModelManifest
    files: dict[str, Path]
    folder: Path


def load_model(config: InferenceConfig) -> LoadedModel:
    """Read ``manifest.json`` of the configured folder; :class:`ModelFileError` names bad files."""
    folder = resolve_model_dir(config.model_dir)
    manifest, files = load_manifest(folder / MANIFEST_NAME, verify_hashes=config.verify_hashes)
    role = "encoder" if config.encoder_only else "mnn"
    if role not in files:
        raise ModelFileError(
            f"{folder / MANIFEST_NAME} lists no '{role}' model, "
            f"needed for encoder_only={config.encoder_only}"
        )
    return LoadedModel(manifest=manifest, files=files, folder=folder)


def network_role(config: InferenceConfig, roles: Collection[str], device: str) -> str:
    """Choose the manifest role of the network to run: ``mnn`` or ``encoder``, int8 or float.

    The int8 files are static quantisations of the float ones for onnxruntime's CPU kernels;
    a GPU provider would run their quantise/dequantise pairs in float and gain nothing, so
    ``auto`` takes them only on the CPU and ``int8`` on a GPU is a configuration error. A model
    folder without int8 files (an older export, a user's own model) runs in float under
    ``auto`` and is refused, with the file named, under ``int8``.
    """
    float_role = "encoder" if config.encoder_only else "mnn"
    int8_role = f"{float_role}{INT8_SUFFIX}"
    on_cpu = device == "cpu"
    if config.precision == "float32":
        return float_role
    if config.precision == "int8":
        if not on_cpu:
            raise ConfigError(
                f"inference.precision=int8 runs on the CPU only, but the device is {device}; "
                "use precision auto or float32 on a GPU"
            )
        if int8_role not in roles:
            raise ModelFileError(
                f"inference.precision=int8 but the manifest lists no '{int8_role}' model "
                "(export one with headpose-quantize)"
            )
        return int8_role
    return int8_role if on_cpu and int8_role in roles else float_role


_CUDA = "CUDAExecutionProvider"
_TENSORRT = "TensorrtExecutionProvider"


def resolve_providers(device: str, available: list[str] | None = None) -> tuple[list, str]:
    """Onnxruntime providers for a ``device`` setting, and a human-readable device name.

    ``auto`` takes CUDA when this onnxruntime build has it and otherwise falls back to the CPU
    with one warning; naming ``cuda`` or ``tensorrt`` explicitly when they are absent is a
    configuration error (a robot configured for a GPU must not quietly run 10x slower).
    """
    available = ort.get_available_providers() if available is None else available
    match = re.fullmatch(r"(auto|cpu|cuda|tensorrt)(?::(\d+))?", device)
    if match is None:
        raise ConfigError(
            f"inference.device={device!r} is not auto, cpu, cuda[:N] or tensorrt[:N]"
        )
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "auto":
        if _CUDA in available:
            return [(_CUDA, {"device_id": 0}), "CPUExecutionProvider"], "cuda:0"
        _LOG.warning(
            "inference.device=auto: no CUDA in this onnxruntime build, running on the CPU"
        )
        return ["CPUExecutionProvider"], "cpu"
    if kind == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    wanted = _CUDA if kind == "cuda" else _TENSORRT
    if wanted not in available:
        raise ConfigError(f"inference.device={device!r} but onnxruntime offers only {available}")
    providers: list = [(wanted, {"device_id": index})]
    if kind == "tensorrt" and _CUDA in available:
        providers.append((_CUDA, {"device_id": index}))
    return [*providers, "CPUExecutionProvider"], f"{kind}:{index}"


class ModelRunner:
    """The network of one model folder on one device, checked against the I/O contract."""

    def __init__(self, model: LoadedModel, config: InferenceConfig) -> None:
        """Create the session and refuse a model whose inputs or outputs break the contract."""
        self.manifest = model.manifest
        self.encoder_only = config.encoder_only
        self.mirror_average = config.mirror_average
        providers, self.device = resolve_providers(config.device)
        self.role = network_role(config, set(model.files), self.device)
        self.precision = "int8" if self.role.endswith(INT8_SUFFIX) else "float32"
        path = model.files[self.role]
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle intra-op threads would otherwise spin for a while after each run, stealing the
        # cores that cropping, decoding and the OR need next (measured on 2 cores: the crop
        # stage of 5 faces went from about 11 ms to about 1 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=providers
            )
        except Exception as error:  # onnxruntime raises several private exception types
            raise ModelFileError(
                f"model file {path} cannot be loaded by onnxruntime: {error}"
            ) from error
        names = self.manifest.outputs
        self._outputs = [names.pose_ed, names.pose_ae]
        if not config.encoder_only:
            self._outputs += [names.heatmaps, names.visibility]
        self._input = names.image
        self._check_contract(path)

    def _check_contract(self, path: Path) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        size = self.manifest.input_size
        if self._input not in inputs:
            raise ModelFileError(
                f"{path} has no input named {self._input!r} (has {sorted(inputs)})"
            )
        shape = inputs[self._input].shape
        if len(shape) != 4 or list(shape[1:]) != [3, size, size]:
            raise ModelFileError(
                f"{path} input {shape} does not match the manifest's (N, 3, {size}, {size})"
            )
        missing = [name for name in self._outputs if name not in outputs]
        if missing:
            raise ModelFileError(f"{path} lacks outputs {missing} (has {sorted(outputs)})")
        if not self.encoder_only:
            heat = outputs[self.manifest.outputs.heatmaps].shape
            expected = [
                self.manifest.scheme.num_points,
                self.manifest.heatmap_size,
                self.manifest.heatmap_size,
            ]
            if len(heat) != 4 or list(heat[1:]) != expected:
                raise ModelFileError(
                    f"{path} heatmaps {heat} do not match the manifest's (N, {expected})"
                )

    def run(self, batch: np.ndarray) -> NetworkOutputs:
        """Run one batch ``(N, 3, S, S)`` float32 through the network.

        With ``mirror_average`` the batch goes through together with its mirror images, and
        each crop's answer is the mean of the two (:func:`mirror_mean`).
        """
        if not self.mirror_average:
            return self._run_once(batch)
        both = self._run_once(np.concatenate([batch, batch[..., ::-1]]))
        return mirror_mean(both, len(batch), self.manifest)

    def _run_once(self, batch: np.ndarray) -> NetworkOutputs:
        values = self._session.run(self._outputs, {self._input: batch})
        if self.encoder_only:
            return NetworkOutputs(
                pose_ed=values[0], pose_ae=values[1], heatmaps=None, visibility=None
            )
        return NetworkOutputs(
            pose_ed=values[0], pose_ae=values[1], heatmaps=values[2], visibility=values[3]
        )


def _unmirror_pose(pose: np.ndarray, crop_size: int) -> np.ndarray:
    """Express a mirror image's pose vectors (N, 6) as the unmirrored crop's.

    The mirror ``x -> S - 1 - x`` negates yaw and roll, keeps pitch, and moves the head origin's
    pixel ``u`` to ``S - 1 - u``: with the crop camera's principal point at ``S / 2``,
    ``tx -> -tx - tz / f``.
    """
    focal = CROP_FOCAL_FACTOR * crop_size
    out = np.array(pose, dtype=np.float64)
    out[:, [0, 2]] *= -1.0
    out[:, 3] = -out[:, 3] - out[:, 5] / focal
    return out


def _unmirror_heatmaps(heatmaps: np.ndarray, flip: list[int], crop_size: int) -> np.ndarray:
    """Express a mirror image's heatmaps (N, L, H, H) as the unmirrored crop's.

    Points are swapped left for right and each map reversed along x. Reversing the map sends
    crop ``x`` to ``S - x`` while the image mirror sent it to ``S - 1 - x``, so the result is
    shifted back by one crop pixel (``H / S`` of a heatmap cell, linear interpolation).
    """
    maps = heatmaps[:, flip, :, ::-1].astype(np.float32)
    shift = heatmaps.shape[-1] / crop_size
    shifted = (1.0 - shift) * maps
    shifted[..., :-1] += shift * maps[..., 1:]
    return shifted / shifted.sum(axis=(2, 3), keepdims=True)


def mirror_mean(outputs: NetworkOutputs, count: int, manifest: ModelManifest) -> NetworkOutputs:
    """Average rows ``i`` and ``count + i`` of ``outputs`` (a crop and its mirror image)."""
    size = manifest.input_size
    flip = list(manifest.scheme.flip_permutation)

    def mean(plain: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        return ((plain.astype(np.float64) + mirrored) / 2.0).astype(plain.dtype)

    pose_ed, pose_ae = (
        mean(values[:count], _unmirror_pose(values[count:], size))
        for values in (outputs.pose_ed, outputs.pose_ae)
    )
    if outputs.heatmaps is None or outputs.visibility is None:
        return NetworkOutputs(pose_ed=pose_ed, pose_ae=pose_ae, heatmaps=None, visibility=None)
    heatmaps = mean(
        outputs.heatmaps[:count], _unmirror_heatmaps(outputs.heatmaps[count:], flip, size)
    )
    visibility = mean(outputs.visibility[:count], outputs.visibility[count:][:, flip])
    return NetworkOutputs(
        pose_ed=pose_ed, pose_ae=pose_ae, heatmaps=heatmaps, visibility=visibility
    )
