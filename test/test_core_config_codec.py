"""Settings schema validation and raw/compressed image decoding."""

from __future__ import annotations

import cv2
import hostile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headpose_ros.core.config import (
    ConfigError,
    EstimatorConfig,
    config_from_flat,
    config_to_flat,
    iter_settings,
)
from headpose_ros.core.image_codec import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    declared_image_size,
    decode_compressed_image,
    decode_raw_image,
)


def test_every_setting_is_described_and_typed() -> None:
    specs = list(iter_settings())
    assert len(specs) > 20
    for spec in specs:
        assert len(spec.description) > 15, spec.name
        assert spec.type in (str, int, float, bool)
        assert isinstance(spec.default, spec.type)
    assert set(config_to_flat(EstimatorConfig())) == {s.name for s in specs}


def test_flat_and_nested_values_are_applied_and_coerced() -> None:
    config = config_from_flat(
        {
            "inference": {"device": "cuda:1"},
            "detector.interval_frames": "5",
            "smoothing.enabled": "true",
        }
    )
    assert config.inference.device == "cuda:1"
    assert config.detector.interval_frames == 5
    assert config.smoothing.enabled is True
    assert EstimatorConfig().detector.interval_frames == 10  # defaults untouched


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"inference.device": "gpu"}, "inference.device"),
        ({"detector.interval_frames": 0}, ">= 1"),
        ({"detector.min_score": 1.5}, "<= 1.0"),
        ({"detector.backend": "yolo"}, "one of"),
        ({"tracking.iou_threshold": float("nan")}, "NaN"),
        ({"tracking.confirm_frames": "three"}, "must be an integer, got the string 'three'"),
        ({"trackin.drop_frames": 3}, "unknown setting"),
        ({"inference.encoder_only": "maybe"}, r"must be a boolean \(true or false\)"),
    ],
)
def test_invalid_values_are_rejected_with_the_setting_name(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_flat(values)


def test_raw_encodings_decode_to_the_same_bgr() -> None:
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    cases = {
        "bgr8": bgr,
        "rgb8": bgr[..., ::-1],
        "bgra8": np.dstack([bgr, np.full((6, 8), 7, np.uint8)]),
        "rgba8": np.dstack([bgr[..., ::-1], np.full((6, 8), 7, np.uint8)]),
    }
    for encoding, pixels in cases.items():
        data = np.ascontiguousarray(pixels).tobytes()
        decoded = decode_raw_image(encoding, 6, 8, 8 * pixels.shape[2], False, data)
        np.testing.assert_array_equal(decoded, bgr, err_msg=encoding)


def test_step_padding_and_mono16_endianness() -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    padded = np.zeros((6, 12), np.uint8)
    padded[:, :8] = grey
    decoded = decode_raw_image("mono8", 6, 8, 12, False, padded.tobytes())
    np.testing.assert_array_equal(decoded[..., 0], grey)
    depth = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000).astype(np.uint16)
    little = decode_raw_image("mono16", 6, 8, 16, False, depth.astype("<u2").tobytes())
    big = decode_raw_image("mono16", 6, 8, 16, True, depth.astype(">u2").tobytes())
    np.testing.assert_array_equal(little, big)
    assert little.max() == 255


def test_yuv_and_bayer_decode_to_colour() -> None:
    uyvy = np.full((4, 8), 128, np.uint8)
    uyvy[:, 1::2] = 200  # luma
    out = decode_raw_image("yuv422", 4, 4, 8, False, uyvy.tobytes())
    # Neutral chroma gives grey; BT.601 video range maps luma 200 to 1.164 * (200 - 16).
    assert out.shape == (4, 4, 3) and np.ptp(out[0, 0]) <= 1 and abs(int(out[0, 0, 1]) - 214) <= 2
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 200  # red sites of RGGB
    assert decode_raw_image("bayer_rggb8", 8, 8, 8, False, mosaic.tobytes())[4, 4].tolist() == [
        0,
        0,
        200,
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("weird8", 4, 4, 12, False, bytes(48)), "unsupported encoding"),
        (("bgr8", 0, 4, 12, False, b""), "empty"),
        (("bgr8", 4, 4, 8, False, bytes(48)), "step"),
        (("bgr8", 4, 4, 12, False, bytes(40)), "bytes"),
        (("yuv422", 4, 3, 6, False, bytes(24)), "even width"),
    ],
)
def test_malformed_raw_images_raise(args: tuple, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_raw_image(*args)


def test_raw_images_above_the_pixel_limit_are_refused_before_allocation() -> None:
    with pytest.raises(ImageDecodeError, match="50000x50000 = 2500.0 Mpx") as refused:
        decode_raw_image("bgr8", 50_000, 50_000, 150_000, False, bytes(64))
    assert refused.value.reason == "image_too_large"
    with pytest.raises(ImageDecodeError, match="limit of 0.0 Mpx") as refused:
        decode_raw_image("mono8", 10, 10, 10, False, bytes(100), max_pixels=99)
    assert decode_raw_image("mono8", 10, 10, 10, False, bytes(100), max_pixels=100).shape == (
        10,
        10,
        3,
    )


def test_compressed_images() -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :15] = (255, 0, 0)
    for ext in (".png", ".jpg"):
        ok, data = cv2.imencode(ext, image)
        assert ok
        decoded = decode_compressed_image("bgr8; compressed", data.tobytes())
        assert decoded.shape == image.shape
    with pytest.raises(ImageDecodeError):
        decode_compressed_image("jpeg", b"")
    with pytest.raises(ImageDecodeError):
        decode_compressed_image("jpeg", b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageDecodeError) as refused:  # a format whose header is not read here
        decode_compressed_image("gif", b"GIF89a" + bytes(100))
    assert refused.value.reason == "unknown_format"


@pytest.mark.parametrize("kind", ["jpg", "png", "bmp", "ppm", "pgm", "webp", "tiff"])
def test_declared_size_is_read_from_every_header(kind: str) -> None:
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    data = cv2.imencode(f".{kind}", image[:, :, 0] if kind == "pgm" else image)[1].tobytes()
    assert declared_image_size(data) == (53, 37)
    assert decode_compressed_image(kind, data).shape == (37, 53, 3)
    assert declared_image_size(data[:3]) is None  # too short to tell


@pytest.mark.parametrize(
    "bomb",
    [
        lambda: hostile.png_bomb(30_000, 30_000),  # the 0.9 MB PNG of issue 12, in 300 bytes
        lambda: hostile.png_bomb(50_000, 50_000),
        lambda: hostile.jpeg_bomb(50_000, 50_000),
        lambda: hostile.jpeg_bomb(20_000, 40_000, progressive=True),
        lambda: hostile.other_bomb("bmp", 50_000, 50_000),
        lambda: hostile.other_bomb("tiff", 50_000, 50_000),
        lambda: hostile.other_bomb("ppm", 50_000, 50_000),
        lambda: hostile.other_bomb("webp", 16_384, 16_384),
    ],
)
def test_decompression_bombs_are_refused_from_their_header(bomb: object) -> None:
    data = bomb()
    width, height = declared_image_size(data)
    assert width * height > DEFAULT_MAX_PIXELS
    rss = hostile.peak_rss_reset()
    with pytest.raises(ImageDecodeError, match=f"{width}x{height}.*max_image_pixels") as refused:
        decode_compressed_image("png", data)
    assert refused.value.reason == "image_too_large"
    assert hostile.peak_rss_growth(rss) < 10 * hostile.MB
    # Under a limit that lets it through, the decoder fails on the missing pixel data.
    if data.startswith(b"\x89PNG"):
        small = hostile.png_bomb(300, 200)
        with pytest.raises(ImageDecodeError, match="cannot be decoded"):
            decode_compressed_image("png", small, max_pixels=60_000)


@settings(max_examples=300)
@given(
    encoding=st.sampled_from([*SUPPORTED_ENCODINGS, "", "bgr16", "jpeg"]),
    height=st.integers(-2, 40),
    width=st.integers(-2, 40),
    step=st.integers(-4, 200),
    big=st.booleans(),
    data=st.binary(max_size=4000),
)
def test_raw_decoder_never_crashes(
    encoding: str, height: int, width: int, step: int, big: bool, data: bytes
) -> None:
    try:
        image = decode_raw_image(encoding, height, width, step, big, data)
    except ImageDecodeError:
        return
    assert (
        image.dtype == np.uint8 and image.shape == (height, width, 3) and image.flags.c_contiguous
    )


@settings(max_examples=200)
@given(data=st.binary(max_size=2000))
def test_compressed_decoder_never_crashes(data: bytes) -> None:
    try:
        image = decode_compressed_image("jpeg", data)
    except ImageDecodeError:
        return
    assert image.ndim == 3 and image.shape[2] == 3
