"""A hostile corpus of camera messages, for the property-based tests of the node and the tools.

Decompression bombs are crafted headers, never allocated pixels: a PNG or JPEG (and BMP,
TIFF, WebP, PNM) that declares up to 50,000 x 50,000 pixels in a few hundred bytes. Beside
them: raw images of every encoding, valid and broken; random and truncated compressed data;
CameraInfo of every distortion model, supported or not, with sizes that match the image,
resize it, or do not fit it. Each CameraInfo comes with whether a face seen through it may
have a metric position, decided by construction (which fields were drawn from the valid
values), not by the code under test.

Also here: peak-RSS measurement per message through ``/proc/<pid>/status`` (the peak is reset
through ``/proc/<pid>/clear_refs`` before each message) and the tally the tests report.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from hypothesis import strategies as st
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from headpose_ros.core.image_codec import DEFAULT_MAX_PIXELS, SUPPORTED_ENCODINGS
from headpose_ros.demo import FOCAL_PX, HEIGHT, WIDTH, demo_camera_info

BOMB_SIDES = st.integers(5_001, 50_000)  # 5,001^2 > 25 Mpx, the default limit
MB = 1 << 20


# ------------------------------------------------------------------ crafted bombs
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header (IHDR with a correct CRC) declaring width x height RGB pixels.

    The IDAT holds only the first rows (zeros): a decoder that trusted the header would
    allocate the whole image before noticing.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * min(64 * (1 + 3 * width), 1 << 20))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


_SMALL = np.random.default_rng(7).integers(0, 255, (16, 16, 3), dtype=np.uint8)


def jpeg_bomb(width: int, height: int, progressive: bool = False) -> bytes:
    """A real 16x16 JPEG whose start-of-frame segment is patched to declare width x height."""
    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    data = bytearray(cv2.imencode(".jpg", _SMALL, flags)[1].tobytes())
    position = 2
    while data[position + 1] not in (0xC0, 0xC1, 0xC2):
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    data[position + 5 : position + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def other_bomb(kind: str, width: int, height: int) -> bytes:
    """A BMP, TIFF, WebP or PPM of 16x16 pixels whose header declares width x height."""
    if kind == "ppm":
        return f"P6\n{width} {height}\n255\n".encode() + _SMALL.tobytes()
    data = bytearray(cv2.imencode(f".{kind}", _SMALL)[1].tobytes())
    if kind == "bmp":
        data[18:26] = struct.pack("<ii", width, height)
    elif kind == "webp":  # sides of 14 bits: at most 16384 (lossless) or 16383 (lossy)
        if data[12:16] == b"VP8L":
            bits = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
            bits |= (min(width, 16384) - 1) | (min(height, 16384) - 1) << 14
            data[21:25] = bits.to_bytes(4, "little")
        else:
            data[26:30] = struct.pack("<HH", min(width, 16383), min(height, 16383))
    else:  # tiff (little-endian, as OpenCV writes it): patch ImageWidth/ImageLength
        ifd = int.from_bytes(data[4:8], "little")
        for entry in range(
            ifd + 2, ifd + 2 + 12 * int.from_bytes(data[ifd : ifd + 2], "little"), 12
        ):
            tag, kind_code = struct.unpack("<HH", data[entry : entry + 4])
            if tag in (256, 257):
                value = width if tag == 256 else height
                data[entry + 2 : entry + 12] = struct.pack("<HII", 4, 1, value)
    return bytes(data)


# ------------------------------------------------------------------ messages
def pixel_bytes(encoding: str) -> int:
    """Bytes per pixel of a sensor_msgs/Image encoding (3 for unknown ones)."""
    if encoding in ("mono8", "8UC1") or encoding.startswith("bayer"):
        return 1
    if encoding in ("mono16", "16UC1", "yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        return 2
    return 4 if encoding in ("rgba8", "bgra8", "8UC4") else 3


def _image(encoding: str, height: int, width: int, step: int, data: bytes) -> Image:
    message = Image(height=height, width=width, encoding=encoding, step=step)
    message.data = data
    return message


@st.composite
def raw_images(draw: st.DrawFn) -> Image:
    """sensor_msgs/Image: valid images of every encoding, broken and huge declared sizes."""
    encoding = draw(
        st.one_of(
            st.sampled_from(SUPPORTED_ENCODINGS),
            st.sampled_from(["32FC1", "bgr16", "rgba16", "jpeg", "nv21", "BGR8", ""]),
            st.text(max_size=12),
        )
    )
    bytes_per_pixel = pixel_bytes(encoding)
    shape = draw(
        st.one_of(
            st.tuples(st.integers(1, 64), st.integers(1, 64)),  # small, valid when exact
            st.tuples(BOMB_SIDES, BOMB_SIDES),  # declares gigapixels, carries bytes
            st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
        )
    )
    height, width = shape
    # Data from a drawn seed: hypothesis's own byte budget is 8 kB per example.
    seed = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()) and height * width <= 64 * 64:
        step = width * bytes_per_pixel + draw(st.sampled_from([0, 0, 3]))  # padded rows too
        data = np.random.default_rng(seed).bytes(step * height)
    else:
        step = draw(st.one_of(st.integers(0, 200), st.integers(0, 2**32 - 1)))
        data = np.random.default_rng(seed).bytes(draw(st.integers(0, 4096)))
    message = _image(encoding, height, width, step, data)
    message.is_bigendian = draw(st.integers(0, 1))
    return message


_NOISE = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
_JPEG = cv2.imencode(".jpg", _NOISE)[1].tobytes()
_PNG = cv2.imencode(".png", _NOISE)[1].tobytes()


@st.composite
def compressed_images(draw: st.DrawFn) -> CompressedImage:
    """sensor_msgs/CompressedImage: bombs of six formats, junk, truncated and valid images."""
    data = draw(
        st.one_of(
            st.builds(png_bomb, BOMB_SIDES, BOMB_SIDES),
            st.builds(jpeg_bomb, BOMB_SIDES, BOMB_SIDES, st.booleans()),
            st.builds(
                other_bomb, st.sampled_from(["bmp", "tiff", "webp", "ppm"]), BOMB_SIDES, BOMB_SIDES
            ),
            st.builds(png_bomb, st.integers(1000, 4000), st.integers(1000, 4000)),  # < limit
            st.binary(max_size=2000),
            st.integers(0, len(_JPEG)).map(lambda n: _JPEG[:n]),
            st.integers(0, len(_PNG)).map(lambda n: _PNG[:n]),
            st.sampled_from([_JPEG, _PNG]),
            st.binary(min_size=1, max_size=50).map(lambda junk: _JPEG[:200] + junk + _JPEG[200:]),
        )
    )
    image_format = draw(
        st.one_of(
            st.sampled_from(["jpeg", "png", "bgr8; jpeg compressed bgr8"]), st.text(max_size=20)
        )
    )
    return CompressedImage(format=image_format, data=data)


@dataclass(frozen=True)
class CameraCase:
    """A CameraInfo and whether a face in a WIDTH x HEIGHT image may be metric through it."""

    message: CameraInfo
    usable: bool
    what: str


_SUPPORTED = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


#: What a CameraInfo case breaks: nothing (about half the cases), or one part of it.
_CAMERA_PROBLEMS = ["none"] * 7 + ["model", "count", "not finite", "size", "K", "ROI"]


@st.composite
def camera_infos(draw: st.DrawFn) -> CameraCase:
    """CameraInfo of every distortion model, with nothing or one part broken.

    Sized for the image, for an image it was resized from, or unknown; sometimes binned.
    Usable only when nothing was broken.
    """
    problem = draw(st.sampled_from(_CAMERA_PROBLEMS))
    model = draw(st.sampled_from(sorted(_SUPPORTED)))
    if problem == "model":
        model = draw(
            st.one_of(
                st.sampled_from(["inverse_brown_conrady", "fisheye", "kannala_brandt", "bogus"]),
                st.text(min_size=1, max_size=12).filter(lambda name: name not in _SUPPORTED),
            )
        )
    count = _SUPPORTED.get(model, 5)
    if problem == "count":
        count = draw(st.integers(0, 14).filter(lambda n: n != count and n not in (0, 4)))
    coefficients = [draw(st.floats(-0.05, 0.05)) for _ in range(count)]
    if problem == "not finite":
        coefficients[draw(st.integers(0, count - 1))] = draw(st.sampled_from([np.nan, np.inf]))
    # The size the intrinsics are for: the image's, one it was resized from, unknown, or (a
    # problem) one it cannot come from: another aspect ratio, a crop.
    scale, what = draw(
        st.sampled_from([(1.0, "same size"), (2.0, "resize"), (0.5, "resize"), (1.0, "unknown")])
    )
    message = demo_camera_info(
        width=int(WIDTH * scale), height=int(HEIGHT * scale), focal_px=FOCAL_PX * scale
    )
    if what == "unknown":
        message.width = message.height = 0
    if problem == "size":
        what = draw(st.sampled_from(["1280x720", "640x360", "641x480", "320x480"]))
        message.width, message.height = (int(v) for v in what.split("x"))
    message.distortion_model = model
    message.d = coefficients
    if problem == "K":
        what = draw(st.sampled_from(["zero", "nan", "negative focal"]))
        bad = {"zero": [0.0] * 9, "nan": [np.nan] * 9}
        message.k = bad.get(what, [-600.0, 0.0, 320.0, 0.0, 600.0, 240.0, 0.0, 0.0, 1.0])
    if draw(st.integers(0, 3)) == 0:
        # A 2x2-binning driver: intrinsics of the full sensor, twice the image's size.
        message.width, message.height = 2 * message.width, 2 * message.height
        message.k = [2 * v if i in (0, 2, 4, 5) else v for i, v in enumerate(message.k)]
        message.binning_x = message.binning_y = 2
        what += ", 2x2 binning"
    if problem == "ROI":
        message.roi.x_offset, message.roi.width, message.roi.height = 100_000, 10, 10
    usable = problem == "none"
    return CameraCase(message, usable, f"{model}, {what}" + ("" if usable else f": {problem}"))


# ------------------------------------------------------------------ memory
def _status(pid: int | str) -> dict[str, int]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {key: int(kb) * 1024 for key, kb in re.findall(r"(VmHWM|VmRSS):\s+(\d+) kB", text)}


def peak_rss_reset(pid: int | str = "self") -> int:
    """Reset the process's peak RSS to its current RSS (Linux); return that RSS in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid)["VmRSS"]


def peak_rss_growth(before: int, pid: int | str = "self") -> int:
    """Peak RSS since :func:`peak_rss_reset` above the RSS it returned, in bytes."""
    return _status(pid)["VmHWM"] - before


@dataclass
class Tally:
    """What a corpus run measured, reported by the tests (``pytest -s`` shows it)."""

    name: str
    rss_per: str = "message"  # what one RSS measurement covers
    messages: int = 0
    crashes: int = 0
    max_rss_growth: int = 0
    degraded: int = 0
    degraded_flagged: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # rejections by reason

    def add(self, kind: str, rss_growth: int) -> None:
        self.messages += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.max_rss_growth = max(self.max_rss_growth, rss_growth)

    def report(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))
        return (
            f"{self.name}: {self.messages} messages ({kinds}); crashes {self.crashes}; "
            f"max RSS growth for one {self.rss_per} {self.max_rss_growth / MB:.1f} MB; degraded "
            f"results {self.degraded}, flagged and counted {self.degraded_flagged}"
            + (f"; rejected by reason: {reasons}" if reasons else "")
        )


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "CameraCase",
    "Tally",
    "camera_infos",
    "compressed_images",
    "jpeg_bomb",
    "other_bomb",
    "peak_rss_growth",
    "peak_rss_of_tool",
    "peak_rss_reset",
    "pixel_bytes",
    "png_bomb",
    "raw_images",
]


def peak_rss_of_tool(module: str, *args: str) -> tuple[int, str]:
    """Run ``headpose_ros.tools.<module>.main(args)`` in a fresh process (exit code 0).

    Returns its peak RSS in bytes and its output. The peak is reset when the script starts:
    Linux carries a forked parent's peak across exec, and pytest's is large.
    """
    import subprocess
    import sys

    script = (
        "import pathlib, re, sys\n"
        "pathlib.Path('/proc/self/clear_refs').write_text('5')\n"
        f"from headpose_ros.tools import {module}\n"
        f"code = {module}.main(sys.argv[1:])\n"
        "status = pathlib.Path('/proc/self/status').read_text()\n"
        "print('PEAK_RSS_KB', re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    peak_kb = int(re.search(r"PEAK_RSS_KB (\d+)", result.stdout).group(1))
    return peak_kb * 1024, result.stdout + result.stderr
