"""``headpose-sweep``: accuracy against milliseconds for network shapes, on validation faces.

Every variant of a sweep file changes the base run configuration (usually its ``model``
table) and trains on the same data with the same short schedule and seed; the variants are then
compared on the validation faces only (300-W NME by inter-ocular distance, AFLW NME by face
box and yaw MAE against AFLW's labels, overall and per |yaw| bin) beside the exported MNN's
single-face onnxruntime latency (2 threads, median of 200). Each variant's run is resumable, so
the winner can be trained on to the full schedule from where the sweep left it. helen_test is
never looked at.

Writes ``sweep.json``, ``sweep.md`` (the table) and ``sweep.png`` (accuracy against ms).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from headpose_training.checkpoint import load_checkpoint
from headpose_training.config import CACHE_DIR, DEFAULT_DATA, TrainConfig, load_config
from headpose_training.evaluate import measure_latency
from headpose_training.export import export_checkpoint
from headpose_training.train import train

__all__ = ["main", "run_sweep"]


def variant_config(base: TrainConfig, name: str, changes: dict[str, Any]) -> TrainConfig:
    """Apply one variant's changes to the base configuration (nested tables merged)."""
    merged = base.to_dict()
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    merged["name"] = f"{base.name}-{name}"
    return TrainConfig.from_dict(merged)


def run_sweep(
    base: TrainConfig,
    variants: dict[str, dict[str, Any]],
    out_dir: Path,
    data_root: Path,
    cache_dir: Path,
) -> list[dict[str, Any]]:
    """Train, export and measure every variant; return one row per variant."""
    rows = []
    for name, changes in variants.items():
        config = variant_config(base, name, changes)
        run_dir = out_dir / name
        checkpoint_path = train(config, run_dir, data_root, cache_dir)
        manifest = export_checkpoint(checkpoint_path, run_dir / "export")
        model, checkpoint = load_checkpoint(checkpoint_path)
        last = checkpoint.state["history"][-1]
        latency = measure_latency(manifest)
        rows.append(
            {
                "variant": name,
                "model": config.model.to_dict(),
                "parameters": model.count_parameters(),
                "mmac": model.flops_estimate() / 1e6,
                "epochs": last["epoch"],
                "val_nme_300w_pct": 100 * last["val_nme"]["300w"],
                "val_nme_aflw_pct": 100 * last["val_nme"].get("aflw", float("nan")),
                "val_yaw_mae_aflw_deg": last["val_yaw_mae"].get("aflw", float("nan")),
                "val_yaw_mae_aflw_by_bin": last["val_yaw_mae_by_bin"].get("aflw", {}),
                "mnn_ms_p50": latency["mnn_ms_p50"],
                "encoder_ms_p50": latency["encoder_ms_p50"],
                "training_s": checkpoint.state["elapsed_s"],
            }
        )
        _write(out_dir, rows)
    return rows


def _write(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Table, JSON and plot of the rows so far (a long sweep shows its progress)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| variant | input | heatmap | channels | params | MMAC | MNN ms | encoder ms "
        "| 300-W NME_io % | AFLW NME % | AFLW yaw MAE | by |yaw| bin |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        model = row["model"]
        bins = " / ".join(
            "-" if value is None else f"{value:.1f}"
            for value in row["val_yaw_mae_aflw_by_bin"].values()
        )
        lines.append(
            f"| {row['variant']} | {model['input_size']} "
            f"| {model['input_size'] // model['stem_stride']} "
            f"| {'-'.join(str(c) for c in model['channels'])} | {row['parameters'] / 1e6:.2f} M "
            f"| {row['mmac']:.0f} | {row['mnn_ms_p50']:.2f} | {row['encoder_ms_p50']:.2f} "
            f"| {row['val_nme_300w_pct']:.2f} | {row['val_nme_aflw_pct']:.2f} "
            f"| {row['val_yaw_mae_aflw_deg']:.2f} | {bins} |"
        )
    (out_dir / "sweep.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        for axis, key in zip(axes, ("val_nme_300w_pct", "val_yaw_mae_aflw_deg"), strict=True):
            axis.scatter(row["mnn_ms_p50"], row[key])
            axis.annotate(row["variant"], (row["mnn_ms_p50"], row[key]))
    axes[0].set(xlabel="MNN ms per face (2 threads)", ylabel="300-W validation NME_io (%)")
    axes[1].set(xlabel="MNN ms per face (2 threads)", ylabel="AFLW validation yaw MAE (deg)")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_dir / "sweep.png", dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--config`` base run, ``--variants`` JSON {name: changes}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="base run configuration")
    parser.add_argument("--variants", type=Path, required=True, help="JSON {name: changes}")
    parser.add_argument("--out", type=Path, required=True, help="folder of the variants' runs")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data root")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="decoded-face cache")
    args = parser.parse_args(argv)
    spec = json.loads(args.variants.read_text())
    base = replace(load_config(args.config), **spec.get("schedule", {}))
    rows = run_sweep(base, spec["variants"], args.out, args.data, args.cache)
    print((args.out / "sweep.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
