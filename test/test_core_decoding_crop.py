"""Crop round trips and sub-pixel heatmap decoding on synthetic maps with known peaks."""

from __future__ import annotations

import numpy as np
import pytest

from headpose_ros.core.crop import (
    Normalisation,
    apply_affine,
    crop_affine,
    crop_image,
    invert_affine,
    square_box_from_face_box,
    to_network_input,
)
from headpose_ros.core.decoding import decode_heatmaps, heatmap_to_crop


def gaussian_maps(centres: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Softmax-like (sum 1) Gaussian maps centred at ``centres`` (N, L, 2) in heatmap pixels."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    cx, cy = centres[..., 0][..., None, None], centres[..., 1][..., None, None]
    maps = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    return (maps / maps.sum(axis=(-1, -2), keepdims=True)).astype(np.float32)


def test_crop_and_inverse_round_trip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x0, y0 = rng.uniform(-50, 400, 2)
        w, h = rng.uniform(20, 300, 2)
        affine = crop_affine(square_box_from_face_box(x0, y0, x0 + w, y0 + h), 128)
        points = rng.uniform(-100, 600, (68, 2))
        back = apply_affine(apply_affine(points, affine), invert_affine(affine))
        np.testing.assert_allclose(back, points, atol=1e-9)


def test_crop_pixels_come_from_the_box() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    image[90:110, 140:160] = 255  # white square at the box centre
    affine = crop_affine(square_box_from_face_box(100, 60, 200, 140), 64)
    crop = crop_image(image, affine, 64)
    assert crop[32, 32].tolist() == [255, 255, 255]
    assert crop[2, 2].tolist() == [0, 0, 0]
    # The white square's centre maps to the crop centre.
    np.testing.assert_allclose(apply_affine(np.array([[150.0, 100.0]]), affine), [[32.0, 32.0]])


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.0])
def test_decode_recovers_subpixel_peaks(sigma: float) -> None:
    rng = np.random.default_rng(1)
    size, crop = 64, 256.0
    centres = rng.uniform(3, size - 4, (3, 68, 2))
    landmarks, peaks = decode_heatmaps(gaussian_maps(centres, size, sigma), crop)
    expected = heatmap_to_crop(centres, size, crop)
    assert landmarks.shape == (3, 68, 2) and peaks.shape == (3, 68)
    # Exact for Gaussians up to float32 rounding: far below the 4 px heatmap cell.
    assert np.max(np.abs(landmarks - expected)) < 0.05


def test_decode_beats_argmax_and_handles_borders() -> None:
    size, crop = 16, 64.0
    centres = np.array([[[0.2, 0.0], [15.0, 15.0], [7.4, 8.6], [0.0, 15.0]]])
    maps = gaussian_maps(centres, size, 1.0)
    landmarks, _ = decode_heatmaps(maps, crop)
    assert np.all(np.isfinite(landmarks))
    assert np.all((landmarks >= 0) & (landmarks <= crop))
    interior = heatmap_to_crop(centres[0, 2], size, crop)
    argmax = heatmap_to_crop(np.round(centres[0, 2]), size, crop)
    assert np.linalg.norm(landmarks[0, 2] - interior) < 0.1 * np.linalg.norm(argmax - interior)


def test_decode_flat_and_zero_maps_stay_finite() -> None:
    maps = np.zeros((2, 68, 8, 8), np.float32)
    maps[1] = 1.0 / 64
    landmarks, _ = decode_heatmaps(maps, 32.0)
    assert np.all(np.isfinite(landmarks))


def test_decode_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        decode_heatmaps(np.zeros((68, 8, 8), np.float32), 32.0)


@pytest.mark.parametrize(
    "normalisation",
    [Normalisation(), Normalisation("BGR", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
)
def test_network_input_matches_the_formula(normalisation: Normalisation) -> None:
    crops = np.random.default_rng(2).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    tensor = to_network_input(crops, normalisation)
    pixels = crops[..., ::-1] if normalisation.channel_order == "RGB" else crops
    expected = (pixels / 255.0 - np.array(normalisation.mean)) / np.array(normalisation.std)
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    np.testing.assert_allclose(tensor, expected.transpose(0, 3, 1, 2), atol=1e-5)
