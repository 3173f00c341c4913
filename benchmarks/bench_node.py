"""End-to-end benchmarks of the running node over DDS (loopback): latency and soak.

    .venv/bin/python benchmarks/bench_node.py latency [--frames 300]
    .venv/bin/python benchmarks/bench_node.py soak [--frames 10000 --rate 30]

latency: image published -> FaceArray received, one frame at a time (lockstep), p50/p95 over
``--frames`` frames, for 1 and 5 faces at 640x480. soak: frames pushed at ``--rate`` Hz without
waiting; prints the node's RSS at the start and end (growth), frames received/processed/
dropped from its diagnostics. Figures only: no pass/fail. DDS stays on loopback on a domain of
its own. ``--model-dir`` selects a model (default: the shipped one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.pop("ROS_LOCALHOST_ONLY", None)

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from headpose_msgs.msg import FaceArray  # noqa: E402
from headpose_ros.dds_profile import use_large_image_profile  # noqa: E402
from headpose_ros.demo import astronaut_frame, image_message  # noqa: E402

WIDTH, HEIGHT = 640, 480


def group_frame(count: int) -> np.ndarray:
    """``count`` (1 to 5) people side by side at 640x480, faces about 100 px wide."""
    if count == 1:
        return astronaut_frame()
    from skimage import data

    head = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[10:330, 110:370]  # 260x320
    tile_w = WIDTH // 5
    tile = cv2.resize(head, (tile_w, int(tile_w * 320 / 260)))
    canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    top = (HEIGHT - tile.shape[0]) // 2
    for slot in range(count):
        canvas[top : top + tile.shape[0], slot * tile_w : (slot + 1) * tile_w] = tile
    return canvas


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class Bench:
    """A node process plus a driver node publishing images and collecting outputs."""

    def __init__(self, model_dir: str, reliable: bool) -> None:
        params = Path(tempfile.mkdtemp()) / "bench.yaml"
        params.write_text(
            '"/**":\n  ros__parameters:\n'
            f"    inference:\n      model_dir: {model_dir!r}\n"
            f"    input:\n      reliability: {'reliable' if reliable else 'best_effort'}\n"
            "    output:\n      markers: false\n      debug_image: false\n"
        )
        executable = Path(sys.executable).with_name("headpose_node")
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [str(executable), "--ros-args", "-r", "__ns:=/bench", "--params-file", str(params)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        print(use_large_image_profile())  # before the node starts: both processes use it
        rclpy.init()
        self.node = Node("headpose_bench")
        # One executor for the whole run: rclpy.spin_once(node) adds and removes the node from
        # the global executor on every call, overhead that would be billed to the node.
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.results: dict[tuple[int, int], float] = {}
        self.faces: dict[tuple[int, int], int] = {}
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(FaceArray, "/bench/faces", self._on_faces, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.publisher = self.node.create_publisher(Image, "/bench/image", 10)
        deadline = time.monotonic() + 90.0
        while self.publisher.get_subscription_count() == 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"node did not start; see {self.log.name}")
            self.spin(0.1)

    def spin(self, timeout_s: float) -> None:
        """Handle the next callback, or return after ``timeout_s`` if none is ready."""
        self.executor.spin_once(timeout_sec=timeout_s)

    def _on_faces(self, message: FaceArray) -> None:
        stamp = (message.header.stamp.sec, message.header.stamp.nanosec)
        self.results[stamp] = time.perf_counter()
        self.faces[stamp] = len(message.faces)

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith("headpose:"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def close(self) -> None:
        """Stop the driver and the node process."""
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()
        self.process.send_signal(subprocess.signal.SIGINT)
        self.process.wait(timeout=20)


def latency(bench: Bench, faces: int, frames: int) -> None:
    """Lockstep latency: publish, wait for the matching FaceArray, repeat."""
    image = group_frame(faces)
    latencies, counts = [], []
    for index in range(frames + 20):
        message = image_message(image, 1_000_000_000 * (faces * 100_000 + index))
        stamp = (message.header.stamp.sec, message.header.stamp.nanosec)
        sent = time.perf_counter()
        bench.publisher.publish(message)
        deadline = time.monotonic() + 10.0
        while stamp not in bench.results and time.monotonic() < deadline:
            bench.spin(0.05)
        if stamp in bench.results and index >= 20:  # the first frames warm up tracking
            latencies.append((bench.results[stamp] - sent) * 1e3)
            counts.append(bench.faces[stamp])
    values = np.asarray(latencies)
    settle = time.monotonic() + 1.5  # one more diagnostics period
    while time.monotonic() < settle:
        bench.spin(0.05)
    print(
        f"latency {faces} face(s) requested, {np.median(counts):.0f} found: "
        f"p50 {np.percentile(values, 50):.1f} ms, p95 {np.percentile(values, 95):.1f} ms, "
        f"max {values.max():.1f} ms over {len(values)} frames ({frames - len(values)} lost); "
        f"inside the node (decode to publish) p50 {bench.diagnostics.get('latency p50 ms')} ms"
    )


def soak(bench: Bench, frames: int, rate: float) -> None:
    """Push frames at ``rate`` Hz without waiting; report RSS growth and frame accounting."""
    images = [group_frame(1), astronaut_frame(1.1, (60.0, 10.0), 8.0)]
    period = 1.0 / rate
    start = time.perf_counter()
    rss_start = None
    for index in range(frames):
        due = start + index * period
        while (wait := due - time.perf_counter()) > 0:
            bench.spin(wait)
        bench.publisher.publish(image_message(images[(index // 30) % 2], 1_000_000 * (index + 1)))
        if index == min(500, frames // 10):  # after warm-up: allocator and caches settled
            rss_start = rss_mb(bench.process.pid)
        if index % 1000 == 0:
            print(f"  soak: {index}/{frames} frames, node RSS {rss_mb(bench.process.pid):.1f} MB")
    settle = time.monotonic() + 3.0
    while time.monotonic() < settle:
        bench.spin(0.05)
    rss_end = rss_mb(bench.process.pid)
    elapsed = time.perf_counter() - start
    values = bench.diagnostics
    arrived = int(values.get("frames received", 0))
    print(
        f"soak: {frames} frames in {elapsed:.0f} s ({frames / elapsed:.1f} Hz sent); "
        f"lost in DDS transport before the node (best effort) {frames - arrived}; "
        f"results received {len(bench.results)}; node: received {arrived}, "
        f"processed {values.get('frames processed')}, dropped (newest wins) "
        f"{values.get('frames dropped (newest frame wins)')}; "
        f"RSS {rss_start:.1f} -> {rss_end:.1f} MB (growth {rss_end - rss_start:+.1f} MB)"
    )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("latency", "soak"))
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--model-dir", default="")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}")
    bench = Bench(args.model_dir, reliable=args.mode == "latency")
    try:
        if args.mode == "latency":
            for faces in (1, 5):
                latency(bench, faces, args.frames or 300)
        else:
            soak(bench, args.frames or 10_000, args.rate)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
