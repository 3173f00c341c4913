"""The accuracy figures in the README and the model card are the recorded evaluation's.

``headpose-evaluate --record`` writes ``training/results/compact/metrics.json``; the README and
``models/MODEL_CARD.md`` quote it by hand. After a retraining, or a fix that moves a figure,
these tests name each quoted figure that no longer matches the record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORD = REPO_ROOT / "training" / "results" / "compact" / "metrics.json"
BINS = ("[0,30)", "[30,60)", "[60,90]")
FOUND_BINS = ("[0,30]", "[30,60]", "[60,90]")


@pytest.fixture(scope="module")
def record() -> dict:
    if not RECORD.is_file():
        pytest.skip(f"no recorded evaluation at {RECORD}")
    return json.loads(RECORD.read_text())


def pct(value: float) -> str:
    return f"{100.0 * value:.1f}%"


def readme_figures(record: dict) -> list[str]:
    """The figures the README's accuracy table quotes, formatted as it writes them."""
    aflw, helen = record["aflw_validation"], record["helen_test"]
    yaw, product = aflw["yaw_vs_aflw_label"], aflw["product_path"]
    by_bin = [yaw["by_abs_yaw"][b] for b in BINS]
    found = product["found_by_abs_yaw"]
    mnn, refined = helen["nme_mnn"]["interocular"], helen["nme_mnn+or"]["interocular"]
    latency = record["latency_ms"]
    return [
        " / ".join(f"{b['mae']:.2f}" for b in by_bin) + f" deg (all: {yaw['overall']['mae']:.2f})",
        "slopes " + " / ".join(f"{b['slope']:.2f}" for b in by_bin),
        f"{pct(product['faces_found'] / aflw['faces'])} ("
        + " / ".join(f"{100.0 * found[b]:.1f}" for b in FOUND_BINS)
        + f"% per bin) / {product['yaw_vs_aflw_label']['overall']['mae']:.2f} deg",
        f"{mnn['mean_pct']:.2f}% / {refined['mean_pct']:.2f}% "
        f"(FR@8% {pct(refined['failure_rate_8pct'])}, AUC@8% {refined['auc_8pct']:.3f})",
        f"{helen['nme_product_path']['interocular']['mean_pct']:.2f}%",
        f"{pct(aflw['visibility_real_self_occlusion']['occlusion_recall_at_80pct_precision'])} / "
        + pct(helen["visibility_synthetic_occluders"]["occlusion_recall_at_80pct_precision"]),
        f"{latency['mnn_ms_p50']:.2f} + {latency['or_ms_p50']:.2f} = "
        f"{latency['mnn_ms_p50'] + latency['or_ms_p50']:.2f} ms",
    ]


def model_card_rows(record: dict) -> list[str]:
    """The rows of the model card's yaw and landmark tables, as it writes them."""
    aflw, helen = record["aflw_validation"], record["helen_test"]
    yaw, product = aflw["yaw_vs_aflw_label"], aflw["product_path"]
    product_yaw = product["yaw_vs_aflw_label"]
    rows = []
    for label_bin, found_bin in zip(BINS, FOUND_BINS, strict=True):
        labelled = yaw["by_abs_yaw"][label_bin]
        rows.append(
            f"| {label_bin} | {labelled['count']:,} | {labelled['mae']:.2f} | "
            f"{labelled['slope']:.2f} | {pct(product['found_by_abs_yaw'][found_bin])} | "
            f"{product_yaw['by_abs_yaw'][label_bin]['mae']:.2f} |"
        )
    overall = yaw["overall"]
    rows.append(
        f"| all | {overall['count']:,} | {overall['mae']:.2f} | {overall['slope']:.2f} | "
        f"{pct(product['faces_found'] / aflw['faces'])} | {product_yaw['overall']['mae']:.2f} |"
    )
    helen_found = f"{helen['product_path_faces_found']} of {helen['faces']} found"
    for label, key in (
        ("MNN (heatmaps), ground-truth boxes", "nme_mnn"),
        ("MNN+OR, ground-truth boxes", "nme_mnn+or"),
        (f"MNN+OR, product path (own detector, {helen_found})", "nme_product_path"),
    ):
        nme = helen[key]
        eyes = nme["interocular"]
        rows.append(
            f"| {label} | {eyes['mean_pct']:.2f}% | {pct(eyes['failure_rate_8pct'])} | "
            f"{eyes['auc_8pct']:.3f} | {nme['interpupil']['mean_pct']:.2f}% | "
            f"{nme['box_height']['mean_pct']:.2f}% |"
        )
    return rows


def test_the_readme_quotes_the_recorded_evaluation(record: dict) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [figure for figure in readme_figures(record) if figure not in readme]
    assert not missing, f"README.md does not quote these recorded figures: {missing}"


def test_the_model_card_quotes_the_recorded_evaluation(record: dict) -> None:
    card = (REPO_ROOT / "models" / "MODEL_CARD.md").read_text()
    missing = [row for row in model_card_rows(record) if row not in card]
    assert not missing, f"models/MODEL_CARD.md does not have these recorded rows: {missing}"
