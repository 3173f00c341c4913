import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from headpose_ros.core.manifest import load_manifest
from headpose_training.evaluate import evaluate_export
from headpose_training.train import TrainConfig, load_checkpoint, load_config, main, train


def test_smoke_run_records_config_history_and_curves(tiny_run, tiny_config):
    _, config, checkpoint = load_checkpoint(tiny_run)
    assert config == tiny_config
    history = checkpoint["state"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]["train"]) == {"heatmaps"}  # pre-training epoch: heatmaps only
    assert set(history[1]["train"]) == {"pose_ed", "pose_ae", "heatmaps", "visibility"}
    assert checkpoint["state"]["sym_start_epoch"] == 1
    assert (tiny_run.parent / "loss_curves.png").stat().st_size > 0
    assert not set(checkpoint["split"]["train"]) & set(checkpoint["split"]["val"])
    assert checkpoint["mean_face_mm"].shape == (68, 3)


def test_training_resumes_from_the_last_checkpoint(tiny_run, tiny_config, tiny_300w, tmp_path):
    run = shutil.copytree(tiny_run.parent, tmp_path / "run")
    before = torch.load(run / "last.pt", weights_only=False)
    train(replace(tiny_config, epochs=3), run, tiny_300w, tmp_path / "cache")
    after = torch.load(run / "last.pt", weights_only=False)
    assert [h["epoch"] for h in after["state"]["history"]] == [1, 2, 3]
    assert after["state"]["history"][:2] == before["state"]["history"]


def test_a_fresh_run_repeats_the_same_weights(tiny_run, tiny_config, tiny_300w, tmp_path):
    again = train(tiny_config, tmp_path / "run", tiny_300w, tmp_path / "cache")
    first = torch.load(tiny_run, weights_only=False)
    second = torch.load(again, weights_only=False)
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    assert first["split"] == second["split"]


def test_shipped_configs_load():
    for name in ("compact", "paper"):
        config = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.json")
        assert config.schedule == "pre+sym"
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="pre+pose")


def test_export_and_evaluate_end_to_end(tiny_export, tiny_300w, tmp_path):
    manifest, files = load_manifest(tiny_export)
    assert (
        manifest.input_size == 32
        and manifest.heatmap_size == 16
        and set(files) == {"mnn", "encoder"}
    )
    metrics = evaluate_export(
        tiny_export, tiny_300w / "helen_test", tmp_path / "eval", record_in_manifest=True
    )
    assert metrics["faces"] == 3
    for kind in ("interocular", "interpupil", "box_height"):
        assert metrics["nme_mnn"][kind]["mean_pct"] > 0
    assert set(metrics["pose_mae_deg"]["by_abs_yaw"]) == {"[0,30)", "[30,60)", "[60,90]"}
    assert 0.0 <= metrics["visibility"]["occlusion_recall_at_80pct_precision"] <= 1.0
    assert metrics["latency_ms"]["mnn_ms_p50"] > 0
    with open(tmp_path / "eval" / "per_image.csv") as stream:
        assert len(list(csv.reader(stream))) == 4
    for plot in ("ced_nme.png", "ced_pose.png"):
        assert (tmp_path / "eval" / plot).stat().st_size > 0

    def reject(constant):
        pytest.fail(f"non-standard JSON constant {constant} written")

    json.loads((tmp_path / "eval" / "metrics.json").read_text(), parse_constant=reject)
    recorded = json.loads(tiny_export.read_text(), parse_constant=reject)["training"][
        "metrics_helen_test"
    ]
    assert recorded["faces"] == 3
    load_manifest(tiny_export)  # still valid, hashes unchanged


def test_one_command_trains_exports_fits_the_or_and_evaluates(tiny_config, tiny_300w, tmp_path):
    small_or = {"num_stages": 2, "initialisations": 2}
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**tiny_config.to_dict(), "occlusion_regressor": small_or}))
    run, export = tmp_path / "run", tmp_path / "models"
    args = ["--config", str(config), "--out", str(run), "--data", str(tiny_300w)]
    assert main([*args, "--cache", str(tmp_path / "cache"), "--export-to", str(export)]) == 0

    manifest, files = load_manifest(export / "manifest.json")  # hashes of all three verified
    assert set(files) == {"mnn", "encoder", "or"}
    assert manifest.training["config"]["occlusion_regressor"]["num_stages"] == 2
    assert manifest.training["occlusion_regressor"]["stages_kept"] in (1, 2)
    metrics = manifest.training["metrics_helen_test"]
    assert metrics["faces"] == 3 and metrics["nme_mnn+or"]["interocular"]["mean_pct"] > 0
    assert (run / "or" / "or_report.png").stat().st_size > 0
    assert (run / "eval" / "ced_nme.png").stat().st_size > 0
