import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from headpose_ros.core.manifest import ModelFileError, load_manifest
from headpose_training.export import (
    EncoderGraph,
    MNNGraph,
    add_files_to_manifest,
    check_parity,
    export_model,
)
from headpose_training.model import MNN, MNNConfig

TINY = MNNConfig(input_size=32, stem_stride=2, channels=(8, 8, 12, 12, 16))


def _trained_looking(model: MNN) -> MNN:
    """Random BatchNorm statistics and pose scaling, so parity is checked on non-trivial values."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            torch.nn.init.normal_(module.weight, 1.0, 0.2, generator=generator)
    model.set_pose_statistics(
        torch.tensor([1.0, -2.0, 3.0, 0.0, 0.0, 0.45]),
        torch.tensor([10.0, 8.0, 9.0, 0.01, 0.01, 0.02]),
    )
    return model.eval()


def test_config_must_end_at_a_one_pixel_bottleneck():
    with pytest.raises(ValueError, match="1x1 bottleneck"):
        MNNConfig(input_size=128, stem_stride=4, channels=(8, 8, 8))
    assert MNNConfig.from_dict(TINY.to_dict()) == TINY
    paper = MNNConfig(
        input_size=256, stem_stride=1, channels=(64, 64, 128, 128, 128, 256, 256, 256, 256)
    )
    assert paper.heatmap_size == 256


def test_forward_shapes_and_encoder_agrees_with_full_model():
    model = _trained_looking(MNN(TINY))
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(image)
        _, pose_ed, pose_ae = model.encode(image)
    assert out.heatmap_logits.shape == (2, 68, 16, 16)
    assert out.visibility_logits.shape == (2, 68) and out.pose_ed.shape == (2, 6)
    torch.testing.assert_close(pose_ed, out.pose_ed)
    torch.testing.assert_close(pose_ae, out.pose_ae)


def test_onnx_export_matches_torch_with_dynamic_batch_and_contract_names(tmp_path):
    model = _trained_looking(MNN(TINY))
    for graph, name in ((MNNGraph(model), "mnn.onnx"), (EncoderGraph(model), "encoder.onnx")):
        export_model(graph, 32, tmp_path / name)
        differences = check_parity(graph, tmp_path / name, 32, batch=3)
        assert all(value < 1e-3 for value in differences.values())
    session = ort.InferenceSession(str(tmp_path / "mnn.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == [
        "heatmaps",
        "pose_ed",
        "pose_ae",
        "visibility",
    ]
    for batch in (1, 5):
        heatmaps, pose_ed, _, visibility = session.run(
            None, {"image": np.random.rand(batch, 3, 32, 32).astype(np.float32)}
        )
        assert heatmaps.shape == (batch, 68, 16, 16) and pose_ed.shape == (batch, 6)
        np.testing.assert_allclose(heatmaps.sum(axis=(2, 3)), 1.0, atol=1e-4)
        assert np.all((visibility >= 0) & (visibility <= 1))
    encoder = ort.InferenceSession(
        str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [o.name for o in encoder.get_outputs()] == ["pose_ed", "pose_ae"]


def test_parity_check_catches_a_different_model(tmp_path):
    model = _trained_looking(MNN(TINY))
    export_model(MNNGraph(model), 32, tmp_path / "mnn.onnx")
    other = _trained_looking(MNN(TINY))
    with torch.no_grad():
        other.heatmap_head.weight.mul_(-3.0)
        other.pose_ed_head.bias.add_(1.0)
    with pytest.raises(AssertionError, match="differs from torch"):
        check_parity(MNNGraph(other), tmp_path / "mnn.onnx", 32)


def test_adding_an_or_artefact_rehashes_and_validates(tmp_path, tiny_export):
    manifest_path = tiny_export
    artefact = manifest_path.parent / "or.npz"
    np.savez(artefact, stages=np.zeros(3))
    add_files_to_manifest(manifest_path, {"or": artefact})
    manifest, files = load_manifest(manifest_path)
    assert files["or"] == artefact.resolve() and "mnn" in files and "encoder" in files
    artefact.write_bytes(b"truncated")
    with pytest.raises(ModelFileError, match="or model file"):
        load_manifest(manifest_path)
    assert "research and non-commercial" in json.loads(manifest_path.read_text())["licence"]
