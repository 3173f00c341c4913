"""A tiny model that honours the ONNX I/O contract, for tests when no shipped model exists.

Built directly with ``onnx.helper`` (no torch), in well under a second: random weights, but
real ONNX files, a real manifest with real hashes, loaded by real onnxruntime sessions. Tests
that need *accurate* outputs use the shipped model in ``models/`` and skip without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from headpose_ros.core.manifest import sha256_of

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The shipped model; HEADPOSE_TEST_MODEL_DIR points the model-dependent tests at another
#: export (e.g. a new training run) without touching models/.
SHIPPED_MODEL_DIR = Path(os.environ.get("HEADPOSE_TEST_MODEL_DIR") or REPO_ROOT / "models")


def shipped_model_available() -> bool:
    """True when the repository's models/ folder holds a manifest."""
    return (SHIPPED_MODEL_DIR / "manifest.json").is_file()


def synthetic_mean_face_mm() -> np.ndarray:
    """A plausible 68-point 3D face in the head frame (x forward, y left, z up), millimetres.

    Hand-placed iBUG-68 layout (jaw U, brows, nose, eyes, mouth) with the origin between the
    eyes; good enough for geometry tests, not a measured anthropometric mean.
    """
    uv: list[tuple[float, float]] = []
    for i in range(17):  # jaw, subject's right ear (negative u) to left ear
        a = (-1.0 + i / 8.0) * np.pi / 2.0 * 1.05
        uv.append((65.0 * np.sin(a), 10.0 - 75.0 * np.cos(a)))
    uv += [(-55.0 + 10.75 * i, 33.0 + 4.0 * np.sin(np.pi * i / 4.0)) for i in range(5)]
    uv += [(12.0 + 10.75 * i, 33.0 + 4.0 * np.sin(np.pi * i / 4.0)) for i in range(5)]
    uv += [(0.0, 25.0), (0.0, 15.0), (0.0, 5.0), (0.0, -5.0)]
    uv += [(-14.0, -12.0), (-7.0, -13.0), (0.0, -14.0), (7.0, -13.0), (14.0, -12.0)]
    uv += [(-45, 22), (-36, 26), (-28, 26), (-20, 22), (-28, 19), (-36, 19)]
    uv += [(20, 22), (28, 26), (36, 26), (45, 22), (36, 19), (28, 19)]
    uv += [(-25, -35), (-15, -30), (-6, -28), (0, -29), (6, -28), (15, -30), (25, -35)]
    uv += [(15, -42), (6, -45), (0, -45), (-6, -45), (-15, -42)]
    uv += [(-20, -35), (-7, -33), (0, -33), (7, -33), (20, -35), (7, -37), (0, -37), (-7, -37)]
    u, v = np.array(uv, dtype=np.float64).T
    depth = 20.0 - 0.012 * u**2 - 0.004 * (v + 10.0) ** 2
    depth[27:31] += np.array([0.0, 5.0, 10.0, 17.0])  # nose bridge rises to the tip
    depth[31:36] += 6.0
    return np.stack([depth - depth[27], u, v - 22.0], axis=1)


def _graph(input_size: int, heatmap_size: int, encoder_only: bool, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    points = 68
    stride = input_size // heatmap_size

    def init(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)

    pose_bias = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.36])
    inits = [
        init("w_ed", rng.normal(0, 5.0, (6, 3)) * [[1], [1], [1], [0.001], [0.001], [0.01]]),
        init("b_ed", pose_bias),
        init("w_ae", rng.normal(0, 5.0, (6, 3)) * [[1], [1], [1], [0.001], [0.001], [0.01]]),
        init("b_ae", pose_bias),
    ]
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["feat"]),
        helper.make_node("Gemm", ["feat", "w_ed", "b_ed"], ["pose_ed"], transB=1),
        helper.make_node("Gemm", ["feat", "w_ae", "b_ae"], ["pose_ae"], transB=1),
    ]
    batch = "batch"
    outputs = [
        helper.make_tensor_value_info("pose_ed", TensorProto.FLOAT, [batch, 6]),
        helper.make_tensor_value_info("pose_ae", TensorProto.FLOAT, [batch, 6]),
    ]
    if not encoder_only:
        inits += [
            init("w_hm", rng.normal(0, 20.0, (points, 3, 1, 1))),
            init("b_hm", np.zeros(points)),
            numpy_helper.from_array(np.array([0, points, -1], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(
                np.array([0, points, heatmap_size, heatmap_size], dtype=np.int64), "map_shape"
            ),
            init("w_vis", rng.normal(0, 1.0, (points, 3))),
            init("b_vis", np.full(points, 1.0)),
        ]
        nodes += [
            helper.make_node(
                "AveragePool",
                ["image"],
                ["pooled"],
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            ),
            helper.make_node("Conv", ["pooled", "w_hm", "b_hm"], ["logits"]),
            helper.make_node("Reshape", ["logits", "flat_shape"], ["flat"]),
            helper.make_node("Softmax", ["flat"], ["soft"], axis=2),
            helper.make_node("Reshape", ["soft", "map_shape"], ["heatmaps"]),
            helper.make_node("Gemm", ["feat", "w_vis", "b_vis"], ["vis_logits"], transB=1),
            helper.make_node("Sigmoid", ["vis_logits"], ["visibility"]),
        ]
        outputs += [
            helper.make_tensor_value_info(
                "heatmaps", TensorProto.FLOAT, [batch, points, heatmap_size, heatmap_size]
            ),
            helper.make_tensor_value_info("visibility", TensorProto.FLOAT, [batch, points]),
        ]
    graph = helper.make_graph(
        nodes,
        "tiny_encoder" if encoder_only else "tiny_mnn",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, [batch, 3, input_size, input_size]
            )
        ],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_tiny_model(
    folder: Path,
    input_size: int = 64,
    heatmap_size: int = 16,
    seed: int = 0,
    with_or: bool = False,
) -> Path:
    """Write manifest.json, mnn.onnx and encoder.onnx (and or.npz) into ``folder``.

    ``with_or`` adds an OR artefact with random trees (from the OR tests' generator), so the
    pipeline's refinement stage runs for real.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for role, encoder_only in (("mnn", False), ("encoder", True)):
        path = folder / f"{role}.onnx"
        onnx.save(_graph(input_size, heatmap_size, encoder_only, seed), path)
        files[role] = {"path": path.name, "sha256": sha256_of(path)}
    if with_or:
        from test_core_occlusion_regressor import random_regressor

        path = folder / "or.npz"
        random_regressor(np.random.default_rng(seed)).save(path)
        files["or"] = {"path": path.name, "sha256": sha256_of(path)}
    manifest = {
        "name": "tiny-random-test-model",
        "input_size": input_size,
        "heatmap_size": heatmap_size,
        "landmark_scheme": "ibug68",
        "normalisation": {"channel_order": "RGB", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "mean_face_mm": synthetic_mean_face_mm().tolist(),
        "files": files,
        "licence": "test artefact, random weights",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model when the repository has one, else a freshly built tiny model.

    Import this fixture into a test module (``from model_factory import model_dir``).
    """
    if shipped_model_available():
        return SHIPPED_MODEL_DIR
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def trained_model_dir() -> Path:
    """The shipped (trained) model; tests of accuracy skip without it."""
    if not shipped_model_available():
        pytest.skip(f"needs the shipped model in {SHIPPED_MODEL_DIR} (manifest.json absent)")
    return SHIPPED_MODEL_DIR
