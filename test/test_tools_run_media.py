"""headpose_run end to end on real images (folder, single image, video) from ../shared."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import hostile
import model_factory
import numpy as np
import pytest

from headpose_ros.core.results import FaceResult, FrameResult
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


def _face_at(box: tuple[float, float, float, float]) -> FaceResult:
    x0, y0, x1, y1 = box
    grid = np.stack(np.meshgrid(np.linspace(x0, x1, 17), np.linspace(y0, y1, 4)), -1)
    return FaceResult(
        track_id="1",
        box=box,
        score=0.9,
        yaw=0.0,
        pitch=0.0,
        roll=0.0,
        rotation=np.eye(3),
        position=np.array([0.0, 0.0, 1.0]),
        metric=False,
        attention=1.0,
        landmarks=grid.reshape(-1, 2)[:68],
        visibility=np.ones(68),
        source="detector",
        cut_by_border=False,
    )


def test_only_the_face_overlapping_the_annotation_is_scored() -> None:
    annotation = _face_at((300.0, 200.0, 400.0, 300.0)).landmarks + 2.0
    elsewhere = _face_at((10.0, 10.0, 60.0, 60.0))
    frame = FrameResult(0, 640, 480, faces=[elsewhere])
    assert run_media.nme_of_frame(frame, annotation) is None, "an unannotated face is not scored"
    frame.faces.append(_face_at((300.0, 200.0, 400.0, 300.0)))
    assert run_media.nme_of_frame(frame, annotation) == pytest.approx(
        np.hypot(2.0, 2.0) / np.linalg.norm(annotation[36] - annotation[45])
    )


def test_a_missed_annotated_face_is_counted_not_scored(
    data_300w: Path, model_dir: Path, tmp_path: Path
) -> None:
    # afw 90800092_1: the annotated face is missed, three others are found; the old
    # nearest-face rule scored one of them (NME 164%).
    folder = tmp_path / "afw"
    folder.mkdir()
    for suffix in (".jpg", ".pts"):
        shutil.copy(data_300w / "afw" / f"90800092_1{suffix}", folder)
    out = tmp_path / "out"
    assert (
        run_media.main([str(folder), "--output-dir", str(out), "--model-dir", str(model_dir)]) == 0
    )
    (record,) = read_jsonl(out / "results.jsonl")
    summary = json.loads((out / "summary.json").read_text())["landmark_nme_interocular"]
    assert summary["annotated"] == 1 and summary["faces"] + summary["missed"] == 1
    if record["nme"] is None:
        assert summary["missed"] == 1 and summary["mean"] is None
    else:
        assert record["nme"] < 0.2 and summary["faces"] == 1


def test_bomb_files_are_refused_before_decoding(
    data_300w: Path, model_dir: Path, tmp_path: Path
) -> None:
    clean, bombs = tmp_path / "clean", tmp_path / "bombs"
    for folder in (clean, bombs):
        folder.mkdir()
        shutil.copy(sorted((data_300w / "helen_test").glob("*.jpg"))[0], folder)
    (bombs / "png_bomb.png").write_bytes(hostile.png_bomb(50_000, 50_000))
    (bombs / "jpeg_bomb.jpg").write_bytes(hostile.jpeg_bomb(50_000, 50_000, progressive=True))
    for kind in ("bmp", "tiff", "webp", "ppm"):
        (bombs / f"{kind}_bomb.{kind}").write_bytes(hostile.other_bomb(kind, 40_000, 30_000))
    common = ["--model-dir", str(model_dir), "--no-annotate"]
    clean_peak, _ = hostile.peak_rss_of_tool(
        "run_media", str(clean), "--output-dir", str(tmp_path / "a"), *common
    )
    bomb_peak, output = hostile.peak_rss_of_tool(
        "run_media", str(bombs), "--output-dir", str(tmp_path / "b"), *common
    )
    print(
        f"\nheadpose_run peak RSS: {clean_peak / 2**20:.0f} MB clean, "
        f"{bomb_peak / 2**20:.0f} MB with six bombs"
    )
    assert bomb_peak - clean_peak < 200 * 2**20
    records = {r["source"]: r for r in read_jsonl(tmp_path / "b" / "results.jsonl")}
    assert len(records) == 7
    for name, record in records.items():
        if "bomb" in name:
            assert record["status"] == "unreadable_image", name
            assert (
                "max_image_pixels" in record["skip_detail"]
                and "not decoded" in record["skip_detail"]
            )
        else:
            assert record["status"] == "ok" and record["faces"]
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["frames_by_status"] == {"ok": 1, "unreadable_image": 6}
