"""onnxruntime sessions from the manifest: devices, batching, encoder-only, bad model files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import model_factory
import numpy as np
import pytest
from model_factory import build_tiny_model

from headpose_ros.core.config import ConfigError, InferenceConfig, config_from_flat
from headpose_ros.core.crop import (
    apply_affine,
    crop_affine,
    crop_image,
    square_box_from_landmarks,
    to_network_input,
)
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.inference import (
    ModelRunner,
    NetworkOutputs,
    load_model,
    mirror_mean,
    network_role,
    resolve_providers,
)
from headpose_ros.core.manifest import ModelFileError
from headpose_ros.tools.annotations import read_pts

# Fixtures shared with the other model-using test modules (see model_factory).
model_dir = model_factory.model_dir
trained_model_dir = model_factory.trained_model_dir


def test_auto_falls_back_to_cpu_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        providers, device = resolve_providers("auto", ["CPUExecutionProvider"])
    assert providers == ["CPUExecutionProvider"] and device == "cpu"
    assert len([r for r in caplog.records if "CPU" in r.getMessage()]) == 1
    providers, device = resolve_providers(
        "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert providers[0][0] == "CUDAExecutionProvider" and device == "cuda:0"


def test_explicit_gpu_devices() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers, device = resolve_providers("tensorrt:1", available)
    assert [p[0] for p in providers[:2]] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert providers[0][1] == {"device_id": 1} and device == "tensorrt:1"
    assert resolve_providers("cuda:2", available)[1] == "cuda:2"
    with pytest.raises(ConfigError, match="onnxruntime offers only"):
        resolve_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ConfigError):
        resolve_providers("npu", available)


def runner(folder: Path, encoder_only: bool = False, mirror: bool = False) -> ModelRunner:
    config = InferenceConfig(
        model_dir=str(folder),
        device="cpu",
        threads=1,
        encoder_only=encoder_only,
        mirror_average=mirror,
    )
    return ModelRunner(load_model(config), config)


def gaussian_maps(points: np.ndarray, size: int, crop: int) -> np.ndarray:
    """(N, L, H, H) normalised Gaussians at crop-pixel ``points`` (model contract centres)."""
    centres = (np.arange(size) + 0.5) * crop / size
    dx = centres[None, None, None, :] - points[..., 0, None, None]
    dy = centres[None, None, :, None] - points[..., 1, None, None]
    maps = np.exp(-(dx**2 + dy**2) / (2 * (1.5 * crop / size) ** 2))
    return (maps / maps.sum(axis=(2, 3), keepdims=True)).astype(np.float32)


def test_mirror_mean_undoes_the_mirror_exactly(model_dir: Path) -> None:
    """A network that sees the mirror image as a mirror answers the same after averaging."""
    manifest = runner(model_dir).manifest
    crop, size = manifest.input_size, manifest.heatmap_size
    flip = list(manifest.scheme.flip_permutation)
    rng = np.random.default_rng(1)
    points = rng.uniform(0.3 * crop, 0.7 * crop, (2, 68, 2))
    mirrored_points = np.stack([crop - 1.0 - points[..., 0], points[..., 1]], axis=-1)[:, flip]
    pose = np.array([[30.0, -8.0, 12.0, 0.01, -0.02, 0.4], [-70.0, 5.0, -3.0, -0.02, 0.0, 0.5]])
    focal = 1.5 * crop
    mirrored_pose = pose * [-1, 1, -1, 1, 1, 1]
    mirrored_pose[:, 3] = -pose[:, 3] - pose[:, 5] / focal
    visibility = rng.uniform(0, 1, (2, 68))
    outputs = NetworkOutputs(
        pose_ed=np.concatenate([pose, mirrored_pose]),
        pose_ae=np.concatenate([pose, mirrored_pose]),
        heatmaps=np.concatenate(
            [gaussian_maps(points, size, crop), gaussian_maps(mirrored_points, size, crop)]
        ),
        visibility=np.concatenate([visibility, visibility[:, flip]]),
    )
    averaged = mirror_mean(outputs, 2, manifest)
    np.testing.assert_allclose(averaged.pose_ed, pose, atol=1e-9)
    np.testing.assert_allclose(averaged.visibility, visibility, atol=1e-6)
    decoded, _ = decode_heatmaps(averaged.heatmaps, float(crop))
    np.testing.assert_allclose(decoded, points, atol=0.05 * crop / size)


def test_mirror_average_runs_both_images_and_keeps_the_contract(model_dir: Path) -> None:
    plain, averaged = runner(model_dir), runner(model_dir, mirror=True)
    size = plain.manifest.input_size
    batch = np.random.default_rng(2).random((2, 3, size, size), dtype=np.float32)
    both = plain.run(np.concatenate([batch, batch[..., ::-1]]))
    expected = mirror_mean(both, 2, plain.manifest)
    got = averaged.run(batch)
    assert got.heatmaps.shape == expected.heatmaps.shape and got.pose_ed.shape == (2, 6)
    np.testing.assert_allclose(got.pose_ed, expected.pose_ed, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.heatmaps.sum(axis=(2, 3)), 1.0, atol=1e-3)


def test_batch_equals_single_runs(model_dir: Path) -> None:
    full = runner(model_dir)
    size = full.manifest.input_size
    batch = np.random.default_rng(0).random((3, 3, size, size), dtype=np.float32)
    together = full.run(batch)
    assert together.heatmaps.shape == (
        3,
        68,
        full.manifest.heatmap_size,
        full.manifest.heatmap_size,
    )
    np.testing.assert_allclose(together.heatmaps.sum(axis=(2, 3)), 1.0, atol=1e-3)
    assert together.visibility.shape == (3, 68) and together.pose_ed.shape == (3, 6)
    for i in range(3):
        alone = full.run(batch[i : i + 1])
        np.testing.assert_allclose(alone.pose_ed[0], together.pose_ed[i], rtol=1e-4, atol=1e-4)
    encoder = runner(model_dir, encoder_only=True).run(batch)
    assert encoder.heatmaps is None and encoder.visibility is None
    np.testing.assert_allclose(encoder.pose_ed, together.pose_ed, rtol=1e-3, atol=1e-3)


@pytest.fixture
def tiny_copy(tmp_path: Path) -> Path:
    return build_tiny_model(tmp_path / "model")


def test_missing_model_file_is_named(tiny_copy: Path) -> None:
    (tiny_copy / "mnn.onnx").unlink()
    with pytest.raises(ModelFileError, match="mnn.onnx"):
        load_model(InferenceConfig(model_dir=str(tiny_copy)))
    with pytest.raises(ModelFileError, match="manifest"):
        load_model(InferenceConfig(model_dir=str(tiny_copy / "nowhere")))


def test_truncated_model_file_is_named(tiny_copy: Path) -> None:
    path = tiny_copy / "mnn.onnx"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="does not match the hash"):
        load_model(InferenceConfig(model_dir=str(tiny_copy)))
    # Without hash checks onnxruntime itself refuses it, still naming the file.
    config = InferenceConfig(model_dir=str(tiny_copy), verify_hashes=False, device="cpu")
    with pytest.raises(ModelFileError, match="mnn.onnx"):
        ModelRunner(load_model(config), config)


def test_mismatched_model_and_manifest(tiny_copy: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", input_size=32, heatmap_size=8)
    shutil.copy(other / "mnn.onnx", tiny_copy / "mnn.onnx")
    manifest = json.loads((tiny_copy / "manifest.json").read_text())
    manifest["files"]["mnn"]["sha256"] = json.loads((other / "manifest.json").read_text())[
        "files"
    ]["mnn"]["sha256"]
    (tiny_copy / "manifest.json").write_text(json.dumps(manifest))
    config = InferenceConfig(model_dir=str(tiny_copy), device="cpu")
    with pytest.raises(ModelFileError, match="does not match the manifest"):
        ModelRunner(load_model(config), config)


def test_encoder_only_needs_an_encoder_file(tiny_copy: Path) -> None:
    manifest = json.loads((tiny_copy / "manifest.json").read_text())
    del manifest["files"]["encoder"]
    (tiny_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="encoder"):
        load_model(InferenceConfig(model_dir=str(tiny_copy), encoder_only=True))


@pytest.mark.parametrize(
    ("precision", "device", "encoder_only", "roles", "chosen"),
    [
        ("auto", "cpu", False, {"mnn", "mnn_int8"}, "mnn_int8"),
        ("auto", "cpu", True, {"mnn", "encoder", "mnn_int8", "encoder_int8"}, "encoder_int8"),
        ("auto", "cuda:0", False, {"mnn", "mnn_int8"}, "mnn"),
        ("auto", "cpu", False, {"mnn"}, "mnn"),  # an older export: float, no complaint
        ("float32", "cpu", False, {"mnn", "mnn_int8"}, "mnn"),
        ("int8", "cpu", False, {"mnn", "mnn_int8"}, "mnn_int8"),
    ],
)
def test_network_role_follows_precision_and_device(
    precision: str, device: str, encoder_only: bool, roles: set[str], chosen: str
) -> None:
    config = InferenceConfig(precision=precision, encoder_only=encoder_only)
    assert network_role(config, roles, device) == chosen


def test_int8_is_refused_on_a_gpu_and_without_its_file() -> None:
    with pytest.raises(ConfigError, match="CPU only"):
        network_role(InferenceConfig(precision="int8"), {"mnn", "mnn_int8"}, "cuda:0")
    with pytest.raises(ModelFileError, match="mnn_int8"):
        network_role(InferenceConfig(precision="int8"), {"mnn"}, "cpu")
    with pytest.raises(ConfigError, match="precision"):
        config_from_flat({"inference.precision": "fp16"})


def test_an_int8_file_without_its_float_network_is_refused(tiny_copy: Path) -> None:
    manifest = json.loads((tiny_copy / "manifest.json").read_text())
    manifest["files"]["encoder_int8"] = manifest["files"].pop("encoder")
    (tiny_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="encoder_int8"):
        load_model(InferenceConfig(model_dir=str(tiny_copy)))


def test_the_shipped_int8_network_answers_as_the_float_one_on_real_faces(
    trained_model_dir: Path, data_300w: Path
) -> None:
    """helen_test faces (never trained on) through both files as the product runs them."""
    runners = {}
    for precision in ("float32", "auto"):
        config = InferenceConfig(
            model_dir=str(trained_model_dir), device="cpu", precision=precision
        )
        runners[precision] = ModelRunner(load_model(config), config)
    assert runners["auto"].precision == "int8" and runners["float32"].precision == "float32"
    manifest = runners["auto"].manifest
    size = manifest.input_size
    crops, truths = [], []
    for path in sorted((data_300w / "helen_test").glob("*.jpg"))[:24]:
        points = read_pts(path.with_suffix(".pts"))
        affine = crop_affine(square_box_from_landmarks(points, manifest.crop_margin), size)
        crops.append(crop_image(cv2.imread(str(path)), affine, size))
        truths.append(apply_affine(points, affine))
    batch = to_network_input(np.stack(crops), manifest.normalisation)
    answers = {name: runner.run(batch) for name, runner in runners.items()}
    angles = np.abs(answers["auto"].pose_ed[:, :3] - answers["float32"].pose_ed[:, :3])
    assert angles.mean() < 0.5 and angles.max() < 5.0, angles
    # Landmark error against the annotations, in crop pixels: int8 within 10% of float.
    errors = {
        name: np.linalg.norm(decode_heatmaps(a.heatmaps, float(size))[0] - truths, axis=-1).mean()
        for name, a in answers.items()
    }
    assert errors["auto"] < 1.1 * errors["float32"], errors
    assert np.all(answers["auto"].pose_ed[:, 5] > 0), "the translation survives quantisation"
