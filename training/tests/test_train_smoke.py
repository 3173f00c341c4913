"""End to end on a few real faces: train (resumable, repeatable), export, OR, evaluate."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN

from headpose_ros.core.manifest import load_manifest
from headpose_training.checkpoint import load_checkpoint
from headpose_training.config import TrainConfig, load_config
from headpose_training.evaluate import evaluate_export, run_record
from headpose_training.train import main, train


def test_smoke_run_records_config_history_split_and_curves(tiny_run, tiny_config):
    _, checkpoint = load_checkpoint(tiny_run)
    assert checkpoint.config == tiny_config
    history = checkpoint.state["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]["train"]) == {"heatmaps"}  # pre-training epoch: heatmaps only
    assert set(history[1]["train"]) == {"pose_ed", "pose_ae", "heatmaps", "visibility"}
    assert set(history[1]["val_nme"]) == {"300w", "aflw"}
    assert checkpoint.state["sym_start_epoch"] == 1
    assert (tiny_run.parent / "loss_curves.png").stat().st_size > 0
    for sides in checkpoint.split.values():
        assert sides["train"] and sides["val"] and not set(sides["train"]) & set(sides["val"])
    # 68 iBUG points and the two ear lobes, its depth set by the AFLW yaw labels.
    assert checkpoint.mean_face_mm.shape == (70, 3)


def test_training_resumes_from_the_last_checkpoint(tiny_run, tiny_config, tiny_data, tmp_path):
    run = shutil.copytree(tiny_run.parent, tmp_path / "run")
    before = torch.load(run / "last.pt", weights_only=False)
    train(replace(tiny_config, epochs=3), run, tiny_data, tmp_path / "cache")
    after = torch.load(run / "last.pt", weights_only=False)
    assert [h["epoch"] for h in after["state"]["history"]] == [1, 2, 3]
    assert after["state"]["history"][:2] == before["state"]["history"]


def test_a_fresh_run_repeats_the_same_weights(tiny_run, tiny_config, tiny_data, tmp_path):
    again = train(tiny_config, tmp_path / "run", tiny_data, tmp_path / "cache")
    first = torch.load(tiny_run, weights_only=False)
    second = torch.load(again, weights_only=False)
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    assert first["split"] == second["split"]


def test_the_last_epochs_are_annealed(tiny_config, tiny_data, tmp_path):
    config = replace(tiny_config, epochs=4, anneal_epochs=2)
    _, checkpoint = load_checkpoint(train(config, tmp_path / "run", tiny_data, tmp_path / "cache"))
    rates = [h["lr"] for h in checkpoint.state["history"]]
    start = checkpoint.state["anneal_from_lr"]
    # Cosine from the rate reached, in steps of 1/3 of a half period: 0.75 and 0.25 of it.
    assert rates[2] == pytest.approx(0.75 * start) and rates[3] == pytest.approx(0.25 * start)
    with pytest.raises(ValueError, match="anneal_epochs"):
        replace(tiny_config, epochs=4, anneal_epochs=3)  # would anneal the pre-training


def test_shipped_configs_load():
    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in ("compact", "paper"):
        config = load_config(configs / f"{name}.json")
        assert config.schedule == "pre+sym" and config.uses_aflw
    # The sweep's short schedule must be a valid change of the compact run (annealing included).
    sweep = json.loads((configs / "sweep.json").read_text())
    assert replace(load_config(configs / "compact.json"), **sweep["schedule"]).epochs == 6
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="pre+pose")
    with pytest.raises(TypeError):
        TrainConfig.from_dict({**TINY_RUN, "learning_rte": 0.1})  # a typo is an error


def test_export_and_evaluate_end_to_end(tiny_export, tiny_run, tiny_data, tmp_path):
    manifest, files = load_manifest(tiny_export)
    assert (
        manifest.input_size == 32
        and manifest.heatmap_size == 16
        and set(files) == {"mnn", "encoder"}
        and len(manifest.mean_face_mm) == 68
    )
    metrics = evaluate_export(
        tiny_export, tiny_run, tiny_data, tmp_path / "eval", record_in_manifest=True
    )
    helen = metrics["helen_test"]
    assert helen["faces"] == 3
    for kind in ("interocular", "interpupil", "box_height"):
        assert helen["nme_mnn"][kind]["mean_pct"] > 0
    bins = helen["pose_mae_deg_vs_pnp_labels"]["by_abs_yaw"]
    assert set(bins) == {"[0,30)", "[30,60)", "[60,90]"}
    aflw = metrics["aflw_validation"]
    assert aflw["faces"] > 0
    assert set(aflw["yaw_vs_aflw_label"]["by_abs_yaw"]) == {"[0,30)", "[30,60)", "[60,90]"}
    assert aflw["visibility_real_self_occlusion"]["hidden_landmarks"] > 0
    labels = metrics["aflw_labels"]
    assert labels["free_pnp_yaw_vs_aflw_label_validation"]["overall"]["count"] > 0
    assert set(labels["duplicate_photographs_all_aflw"]) == {"[0,30]", "[30,60]", "[60,90]"}
    assert metrics["latency_ms"]["mnn_ms_p50"] > 0
    for output in ("helen_test_per_face.csv", "aflw_val_per_face.csv", "aflw_yaw.png"):
        assert (tmp_path / "eval" / output).stat().st_size > 0

    def reject(constant):
        pytest.fail(f"non-standard JSON constant {constant} written")

    json.loads((tmp_path / "eval" / "metrics.json").read_text(), parse_constant=reject)
    recorded = json.loads(tiny_export.read_text(), parse_constant=reject)["training"]["metrics"]
    assert recorded["helen_test"]["faces"] == 3
    load_manifest(tiny_export)  # still valid, hashes unchanged


def test_a_clone_without_the_run_folder_finds_the_run_s_split_and_mean_face_again(
    tiny_export, tiny_run, tiny_data, tmp_path
):
    # A clean clone has the shipped manifest but not the checkpoint: the evaluation rebuilds
    # the held-out faces and the mean face from the config the manifest records.
    _, checkpoint = load_checkpoint(tiny_run)
    rebuilt = run_record(tiny_export, None, tiny_data, tmp_path / "cache")
    assert rebuilt.split == checkpoint.split
    np.testing.assert_array_equal(rebuilt.mean_face_mm, checkpoint.mean_face_mm)
    assert rebuilt.config == checkpoint.config
    # Other data (here: one 300-W face fewer) would be another split: refused, not evaluated.
    fewer = shutil.copytree(tiny_data, tmp_path / "fewer")
    first = sorted((fewer / "300w_subset" / "afw").glob("*.pts"))[0]
    first.unlink()
    first.with_suffix(".jpg").unlink()
    with pytest.raises(ValueError, match="not the data it was trained on"):
        run_record(tiny_export, None, fewer, tmp_path / "cache")


def test_one_command_trains_exports_fits_the_or_and_evaluates(tiny_config, tiny_data, tmp_path):
    small_or = {"num_stages": 2, "initialisations": 2, "aflw_faces": 8}
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**tiny_config.to_dict(), "occlusion_regressor": small_or}))
    run, export = tmp_path / "run", tmp_path / "models"
    args = ["--config", str(config), "--out", str(run), "--data", str(tiny_data)]
    assert main([*args, "--cache", str(tmp_path / "cache"), "--export-to", str(export)]) == 0

    manifest, files = load_manifest(export / "manifest.json")  # hashes of all three verified
    # The int8 copies are shipped unless they disagree with the float networks (then removed).
    int8 = manifest.training["int8"]
    assert int8["agreement_on_validation_faces"]["mnn"]["faces"] > 0
    shipped = {f"{role}_int8" for role in ("mnn", "encoder") if role not in int8["refused"]}
    assert set(files) == {"mnn", "encoder", "or"} | shipped
    assert manifest.training["config"]["occlusion_regressor"]["num_stages"] == 2
    assert manifest.training["occlusion_regressor"]["stages_kept"] in (1, 2)
    metrics = manifest.training["metrics"]["helen_test"]
    assert metrics["faces"] == 3 and metrics["nme_mnn+or"]["interocular"]["mean_pct"] > 0
    assert (run / "or" / "or_report.png").stat().st_size > 0
    assert (run / "eval" / "ced_nme_helen_test.png").stat().st_size > 0
    # The presence thresholds were measured for this model, not left at the defaults.
    measured = manifest.training["face_presence"]
    assert manifest.face_presence == {"min": measured["min"], "clear": measured["clear"]}
    assert measured["validation_faces"] > 0 and measured["face_free_crops"] > 0
