"""onnxruntime sessions from the manifest: devices, batching, encoder-only, bad model files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import model_factory
import numpy as np
import pytest
from model_factory import build_tiny_model

from headpose_ros.core.config import ConfigError, InferenceConfig
from headpose_ros.core.inference import ModelRunner, load_model, resolve_providers
from headpose_ros.core.manifest import ModelFileError

# Fixtures shared with the other model-using test modules (see model_factory).
model_dir = model_factory.model_dir


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


def runner(folder: Path, encoder_only: bool = False) -> ModelRunner:
    config = InferenceConfig(
        model_dir=str(folder), device="cpu", threads=1, encoder_only=encoder_only
    )
    return ModelRunner(load_model(config), config)


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
