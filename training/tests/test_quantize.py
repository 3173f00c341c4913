import json

import numpy as np
import onnx

from headpose_ros.core.config import InferenceConfig
from headpose_ros.core.inference import ModelRunner, load_model
from headpose_ros.core.manifest import load_manifest
from headpose_training import quantize
from headpose_training.quantize import float_head_nodes, quantize_export


def test_the_heads_are_found_from_each_output_back_to_their_layer(tiny_export):
    model = onnx.load(str(tiny_export.parent / "mnn.onnx"))
    by_name = {node.name: node for node in model.graph.node}
    kept = [by_name[name] for name in float_head_nodes(model)]
    # Four outputs, each ending at its own weighted layer: two Gemm (poses), two Conv.
    layers = sorted(node.op_type for node in kept if node.op_type in ("Conv", "Gemm"))
    assert layers == ["Conv", "Conv", "Gemm", "Gemm"]
    assert {"Softmax", "Sigmoid"} <= {node.op_type for node in kept}


def test_quantised_networks_are_registered_checked_and_chosen_on_the_cpu(
    tiny_export, tiny_run, tiny_data, monkeypatch
):
    # The tiny run's flat heatmaps move by about a pixel; the shipped model's by 0.45 px.
    monkeypatch.setattr(quantize, "TOLERANCE", {"angles_deg_mean": 2.0, "landmarks_px_mean": 3.0})
    report = quantize_export(tiny_export, tiny_run, tiny_data, per_source=8)
    manifest, files = load_manifest(tiny_export)  # hashes of the new files verified
    assert {"mnn_int8", "encoder_int8"} <= set(files)
    assert manifest.training["int8"] == json.loads(json.dumps(report))
    figures = report["agreement_on_validation_faces"]["mnn"]
    assert (
        figures["faces"] > 0
        and figures["angles_deg_mean"] <= quantize.TOLERANCE["angles_deg_mean"]
    )
    # Weights are quantised (DequantizeLinear feeds the convolutions), the heads are not.
    graph = onnx.load(str(files["mnn_int8"])).graph
    producers = {name: node for node in graph.node for name in node.output}
    heads = set(float_head_nodes(onnx.load(str(files["mnn"]))))
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    quantised = [
        node.name
        for node in convolutions
        if node.input[1] in producers and producers[node.input[1]].op_type == "DequantizeLinear"
    ]
    assert quantised and not heads & set(quantised)
    config = InferenceConfig(model_dir=str(tiny_export.parent), device="cpu")
    runner = ModelRunner(load_model(config), config)
    assert runner.role == "mnn_int8" and runner.precision == "int8"
    batch = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    assert np.all(runner.run(batch).pose_ed[:, 5] > 0)


def test_an_int8_network_beyond_tolerance_is_removed_not_shipped(
    tiny_export, tiny_run, tiny_data, monkeypatch
):
    monkeypatch.setattr(quantize, "TOLERANCE", {"angles_deg_mean": 0.0})
    report = quantize_export(tiny_export, tiny_run, tiny_data, per_source=8)
    assert set(report["refused"]) == {"mnn", "encoder"}
    manifest, files = load_manifest(tiny_export)
    assert "mnn_int8" not in files and manifest.training["int8"]["refused"]
    assert not (tiny_export.parent / "mnn_int8.onnx").exists()
    config = InferenceConfig(model_dir=str(tiny_export.parent), device="cpu")
    assert ModelRunner(load_model(config), config).precision == "float32"
