"""Raw and compressed camera images -> BGR numpy arrays, without cv_bridge or message types.

The fields are those of sensor_msgs/Image (encoding, height, width, step, is_bigendian, data)
and sensor_msgs/CompressedImage (format, data), passed as plain values so the ROS node and the
rosbag tool (whose messages come from different libraries) share one tested decoder. Every
malformed input raises :class:`ImageDecodeError` with the reason; callers count and skip.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "decode_compressed_image",
    "decode_raw_image",
    "prepare_image",
]


class ImageDecodeError(ValueError):
    """The image bytes do not describe a picture this decoder can use."""


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

#: Refuse absurd sizes before allocating: a corrupt header must not exhaust memory.
_MAX_SIDE = 16384


def decode_raw_image(
    encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: bytes | np.ndarray
) -> np.ndarray:
    """sensor_msgs/Image fields -> contiguous HxWx3 uint8 BGR.

    Rows are ``step`` bytes apart (padding after each row is allowed and ignored); 16-bit
    pixels honour ``is_bigendian`` and are scaled to 8 bits by their frame's maximum, so a
    depth-like mono16 stream is still visible to the face detector.
    """
    if encoding not in _LAYOUTS:
        raise ImageDecodeError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    if not (0 < height <= _MAX_SIDE and 0 < width <= _MAX_SIDE):
        raise ImageDecodeError(f"image size {width}x{height} is empty or implausible")
    pixel_bytes, conversion, channels = _LAYOUTS[encoding]
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageDecodeError(f"step {step} is smaller than width x pixel size = {row_bytes}")
    buffer = (
        np.frombuffer(memoryview(data), dtype=np.uint8)
        if not isinstance(data, np.ndarray)
        else data.reshape(-1).view(np.uint8)
    )
    if buffer.size < step * (height - 1) + row_bytes:
        raise ImageDecodeError(
            f"data holds {buffer.size} bytes, {encoding} {width}x{height} with step {step} "
            f"needs {step * height}"
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
        raise ImageDecodeError(f"{encoding} needs an even width, got {width}")
    return cv2.cvtColor(image, conversion)


def decode_compressed_image(image_format: str, data: bytes | np.ndarray) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG bytes) -> HxWx3 uint8 BGR.

    ``image_format`` is informative only (drivers fill it inconsistently: "jpeg",
    "bgr8; jpeg compressed bgr8", "png"); the bytes' own signature decides.
    """
    buffer = (
        np.frombuffer(memoryview(data), dtype=np.uint8)
        if not isinstance(data, np.ndarray)
        else data.reshape(-1).view(np.uint8)
    )
    if buffer.size == 0:
        raise ImageDecodeError(f"compressed image ({image_format!r}) has no data")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageDecodeError(
            f"compressed image ({image_format!r}, {buffer.size} bytes) cannot be decoded"
        )
    return image


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
