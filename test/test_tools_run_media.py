"""headpose_run end to end on real images (folder, single image, video) from ../shared."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import model_factory
import pytest

from headpose_ros.tools import run_media

# Fixtures shared with the other model-using test modules (see model_factory).
model_dir = model_factory.model_dir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def image_folder(data_300w: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for jpg in sorted((data_300w / "helen_test").glob("*.jpg"))[:4]:
        shutil.copy(jpg, folder)
        shutil.copy(jpg.with_suffix(".pts"), folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    return folder


def test_folder_run_accounts_for_every_image(
    image_folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = run_media.main(
        [
            str(image_folder),
            "--output-dir",
            str(out),
            "--model-dir",
            str(model_dir),
            "--set",
            "inference.device=cpu",
        ]
    )
    assert code == 0
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 5
    by_source = {r["source"]: r for r in records}
    assert by_source["broken.jpg"]["status"] == "unreadable_image"
    good = [r for r in records if r["source"] != "broken.jpg"]
    assert all(r["status"] == "ok" and r["faces"] and r["nme"] is not None for r in good)
    face = good[0]["faces"][0]
    assert len(face["landmarks"]) == 68 and len(face["visibility"]) == 68
    with open(out / "results.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert {row["source"] for row in rows} == set(by_source)
    assert sorted(p.name for p in (out / "annotated").iterdir()) == sorted(
        p.stem + ".jpg" for p in image_folder.glob("*.jpg") if p.name != "broken.jpg"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 5 and summary["frames_by_status"] == {
        "ok": 4,
        "unreadable_image": 1,
    }
    assert summary["landmark_nme_interocular"]["faces"] == 4
    assert "p50" in summary["latency_ms"]["mnn"]
    # What detection did, summed over the run: one synchronous run per unrelated image.
    counters = summary["estimator_counters"]
    published = sum(len(r["faces"]) for r in good)
    assert counters["detector_runs"] == 4 and counters["faces_published"] == published
    assert counters["faces_detected"] >= published and counters["faces_tracked"] >= published
    assert (out / "timeline.png").stat().st_size > 10_000


def test_video_run_writes_an_annotated_video(
    image_folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    image = cv2.imread(str(sorted(image_folder.glob("*_*.jpg"))[0]))
    video_path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(
        str(video_path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (image.shape[1], image.shape[0])
    )
    for i in range(12):
        writer.write(
            cv2.warpAffine(
                image,
                cv2.getRotationMatrix2D((240, 240), 2.0 * i, 1.0),
                (image.shape[1], image.shape[0]),
            )
        )
    writer.release()
    out = tmp_path / "video_out"
    args = [
        str(video_path),
        "--output-dir",
        str(out),
        "--model-dir",
        str(model_dir),
        "--intrinsics",
        "500,500,240,240",
    ]
    assert run_media.main(args) == 0
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 12
    assert [r["timestamp_ns"] for r in records] == sorted(r["timestamp_ns"] for r in records)
    assert sum(r["detector_ran"] for r in records) < 12  # steady-state tracking between detections
    capture = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    capture.release()


def test_bad_invocations_exit_with_a_message(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run_media.main([str(tmp_path / "missing.mp4"), "--model-dir", str(model_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_media.main(["97", "--model-dir", str(model_dir)]) == 2  # no such camera here
    assert "camera 97 cannot be opened" in capsys.readouterr().err
    assert run_media.main([str(tmp_path), "--model-dir", str(tmp_path / "nomodel")]) == 2
    assert run_media.main([str(tmp_path), "--set", "inference.device=gpu"]) == 2
    assert "inference.device" in capsys.readouterr().err
    assert run_media.main(["--list-settings"]) == 0
    assert "tracking.drop_frames" in capsys.readouterr().out
