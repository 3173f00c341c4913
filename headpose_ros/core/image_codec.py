"""Raw and compressed camera images -> BGR numpy arrays, without cv_bridge or message types.

The fields are those of sensor_msgs/Image (encoding, height, width, step, is_bigendian, data)
and sensor_msgs/CompressedImage (format, data), passed as plain values so the ROS node and the
rosbag tool (whose messages come from different libraries) share one tested decoder. Every
malformed input raises :class:`ImageDecodeError` with the reason; callers count and skip.

Compressed bytes are never handed to a decoder before their header has been read here: a
0.9 MB PNG may declare 30000 x 30000 pixels, and decoding it would allocate 2.7 GB. The
declared size is checked against a pixel limit first (:func:`declared_image_size`), and only
formats whose header this module can read (JPEG, PNG, BMP, PNM, WebP, TIFF) are decoded.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "declared_image_size",
    "decode_compressed_image",
    "decode_raw_image",
    "prepare_image",
]

#: Largest image decoded by default, in pixels (setting ``max_image_pixels``): room for 20 MP
#: sensors and 4K video (8.3 Mpx); a 25 Mpx BGR frame takes 75 MB.
DEFAULT_MAX_PIXELS = 25_000_000


class ImageDecodeError(ValueError):
    """The image bytes do not describe a picture this decoder can use.

    ``reason`` is a short stable key for counting (``unsupported_encoding``,
    ``implausible_size``, ``truncated_data``, ``image_too_large``, ``unknown_format``,
    ``undecodable``); the message is the full explanation.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


#: encoding -> (bytes per pixel, OpenCV conversion to BGR or None, channels before conversion)
_LAYOUTS: dict[str, tuple[int, int | None, int]] = {
    "bgr8": (3, None, 3),
    "8UC3": (3, None, 3),
    "rgb8": (3, cv2.COLOR_RGB2BGR, 3),
    "bgra8": (4, cv2.COLOR_BGRA2BGR, 4),
    "8UC4": (4, cv2.COLOR_BGRA2BGR, 4),
    "rgba8": (4, cv2.COLOR_RGBA2BGR, 4),
    "mono8": (1, cv2.COLOR_GRAY2BGR, 1),
    "8UC1": (1, cv2.COLOR_GRAY2BGR, 1),
    "mono16": (2, cv2.COLOR_GRAY2BGR, 1),
    "16UC1": (2, cv2.COLOR_GRAY2BGR, 1),
    # ROS bayer names give the 2x2 pattern from the top-left; OpenCV names the pattern of the
    # second row's second and third pixels, hence the apparently swapped constants.
    "bayer_rggb8": (1, cv2.COLOR_BayerBG2BGR, 1),
    "bayer_bggr8": (1, cv2.COLOR_BayerRG2BGR, 1),
    "bayer_gbrg8": (1, cv2.COLOR_BayerGR2BGR, 1),
    "bayer_grbg8": (1, cv2.COLOR_BayerGB2BGR, 1),
    "yuv422": (2, cv2.COLOR_YUV2BGR_UYVY, 2),
    "uyvy": (2, cv2.COLOR_YUV2BGR_UYVY, 2),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2BGR_YUY2, 2),
    "yuyv": (2, cv2.COLOR_YUV2BGR_YUY2, 2),
}
SUPPORTED_ENCODINGS = tuple(sorted(_LAYOUTS))

#: Refuse absurd sides before allocating: a corrupt header must not exhaust memory.
_MAX_SIDE = 65535


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if not (0 < height <= _MAX_SIDE and 0 < width <= _MAX_SIDE):
        raise ImageDecodeError(
            f"{what} size {width}x{height} is empty or implausible", "implausible_size"
        )
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{what} declares {width}x{height} = {width * height / 1e6:.1f} Mpx, above the "
            f"limit of {max_pixels / 1e6:.1f} Mpx (setting max_image_pixels); not decoded",
            "image_too_large",
        )


def decode_raw_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: bool,
    data: bytes | np.ndarray,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """sensor_msgs/Image fields -> contiguous HxWx3 uint8 BGR.

    Rows are ``step`` bytes apart (padding after each row is allowed and ignored); 16-bit
    pixels honour ``is_bigendian`` and are scaled to 8 bits by their frame's maximum, so a
    depth-like mono16 stream is still visible to the face detector. Images above
    ``max_pixels`` are refused before anything is allocated.
    """
    if encoding not in _LAYOUTS:
        raise ImageDecodeError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}",
            "unsupported_encoding",
        )
    _check_size(width, height, max_pixels, f"{encoding} image")
    pixel_bytes, conversion, channels = _LAYOUTS[encoding]
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width x pixel size = {row_bytes}", "truncated_data"
        )
    buffer = (
        np.frombuffer(memoryview(data), dtype=np.uint8)
        if not isinstance(data, np.ndarray)
        else data.reshape(-1).view(np.uint8)
    )
    if buffer.size < step * (height - 1) + row_bytes:
        raise ImageDecodeError(
            f"data holds {buffer.size} bytes, {encoding} {width}x{height} with step {step} "
            f"needs {step * height}",
            "truncated_data",
        )
    rows = np.lib.stride_tricks.as_strided(buffer, shape=(height, row_bytes), strides=(step, 1))
    if pixel_bytes == 2 and channels == 1:
        pixels16 = (
            np.ascontiguousarray(rows)
            .view(">u2" if is_bigendian else "<u2")
            .reshape(height, width)
        )
        peak = int(pixels16.max())
        image = (pixels16.astype(np.float32) * (255.0 / peak if peak else 0.0)).astype(np.uint8)
    else:
        image = (
            np.ascontiguousarray(rows).reshape(height, width, channels)
            if channels > 1
            else np.ascontiguousarray(rows)
        )
    if conversion is None:
        return image
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and width % 2:
        raise ImageDecodeError(f"{encoding} needs an even width, got {width}", "implausible_size")
    return cv2.cvtColor(image, conversion)


def decode_compressed_image(
    image_format: str, data: bytes | np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG bytes; also BMP, PNM, WebP, TIFF) -> BGR.

    ``image_format`` is informative only (drivers fill it inconsistently: "jpeg",
    "bgr8; jpeg compressed bgr8", "png"); the bytes' own signature decides. The size the
    header declares is checked against ``max_pixels`` before the decoder allocates anything.
    """
    buffer = (
        np.frombuffer(memoryview(data), dtype=np.uint8)
        if not isinstance(data, np.ndarray)
        else data.reshape(-1).view(np.uint8)
    )
    if buffer.size == 0:
        raise ImageDecodeError(
            f"compressed image ({image_format!r}) has no data", "truncated_data"
        )
    size = declared_image_size(memoryview(np.ascontiguousarray(buffer)))
    if size is None:
        raise ImageDecodeError(
            f"compressed image ({image_format!r}, {buffer.size} bytes) has no JPEG, PNG, BMP, "
            "PNM, WebP or TIFF header this decoder can read",
            "unknown_format",
        )
    _check_size(*size, max_pixels, f"compressed image ({image_format!r})")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageDecodeError(
            f"compressed image ({image_format!r}, {buffer.size} bytes) cannot be decoded",
            "undecodable",
        )
    return image


def declared_image_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """Return the (width, height) an encoded image declares; ``None`` if unknown.

    Reads the header only (nothing is decoded): JPEG (the first start-of-frame segment), PNG
    (IHDR), BMP, PNM (P1-P6), WebP (VP8, VP8L, VP8X) and classic TIFF (the first IFD, which
    may sit after the pixels).
    """
    for signature, reader in _HEADER_READERS:
        if bytes(data[: len(signature)]) == signature:
            try:
                return reader(data)
            except (IndexError, ValueError):
                return None
    return None


def _png_size(data: bytes | memoryview) -> tuple[int, int] | None:
    # Signature (8 bytes), then the IHDR chunk: length (4), "IHDR", width (4), height (4).
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


#: JPEG start-of-frame markers (every coding process); C4, C8 and CC are other segments.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _SOF_MARKERS and position + 9 <= len(data):
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            return int.from_bytes(data[position + 7 : position + 9], "big"), height
        if marker in (0xDA, 0xD9) or length < 2:  # scan or end before any frame header
            return None
        position += 2 + length
    return None


def _bmp_size(data: bytes | memoryview) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    if int.from_bytes(data[14:18], "little") == 12:  # OS/2 core header: 16-bit sides
        return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)  # negative: rows top-down
    return abs(width), abs(height)


def _pnm_size(data: bytes | memoryview) -> tuple[int, int] | None:
    text = re.sub(rb"#[^\n]*", b" ", bytes(data[2:4096]))  # comments may sit between the fields
    fields = text.split()
    return int(fields[0]), int(fields[1])


def _webp_size(data: bytes | memoryview) -> tuple[int, int] | None:
    if data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sides after the frame tag and start code
        return (
            int.from_bytes(data[26:28], "little") & 0x3FFF,
            int.from_bytes(data[28:30], "little") & 0x3FFF,
        )
    if chunk == b"VP8L":  # lossless: 14-bit sides minus one, packed after the signature byte
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sides minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data: bytes | memoryview) -> tuple[int, int] | None:
    order = "little" if data[:2] == b"II" else "big"
    ifd = int.from_bytes(data[4:8], order)
    count = int.from_bytes(data[ifd : ifd + 2], order)
    sides: dict[int, int] = {}
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag = int.from_bytes(data[entry : entry + 2], order)
        kind = int.from_bytes(data[entry + 2 : entry + 4], order)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            width = 2 if kind == 3 else 4
            sides[tag] = int.from_bytes(data[entry + 8 : entry + 8 + width], order)
    return (sides[256], sides[257]) if len(sides) == 2 else None


_HEADER_READERS = (
    (b"\xff\xd8", _jpeg_size),
    (b"\x89PNG\r\n\x1a\n", _png_size),
    (b"BM", _bmp_size),
    *((f"P{kind}".encode(), _pnm_size) for kind in range(1, 7)),
    (b"RIFF", _webp_size),
    (b"II*\x00", _tiff_size),
    (b"MM\x00*", _tiff_size),
)


def prepare_image(image: object, min_side: int) -> tuple[np.ndarray | None, str | None, str]:
    """Validate and normalise an estimator's input frame to contiguous HxWx3 uint8 BGR.

    Accepts grey (HxW or HxWx1), BGR and BGRA uint8 arrays with any strides. Returns
    ``(image, None, "")`` or ``(None, reason, detail)`` with reason ``unsupported_image``,
    ``empty_image`` or ``image_too_small``: the estimator counts a skip instead of raising,
    because one bad frame must not stop a stream. This is the frame's one check: the crops
    (``crop.crop_images``) rely on it.
    """
    if not isinstance(image, np.ndarray):
        return None, "unsupported_image", f"expected a numpy array, got {type(image).__name__}"
    if image.dtype != np.uint8:
        return None, "unsupported_image", f"expected uint8 pixels, got {image.dtype}"
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        return (
            None,
            "unsupported_image",
            f"expected HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}",
        )
    if image.size == 0:
        return None, "empty_image", f"image has zero size {image.shape}"
    if min(image.shape[:2]) < min_side:
        return (
            None,
            "image_too_small",
            f"image {image.shape[1]}x{image.shape[0]} is below {min_side} px",
        )
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image), None, ""
