"""The device path's torch steps against the reference path's OpenCV/NumPy ones, on the CPU device.

Warps, the soft mask and the paste-back, with faces near the picture's edges and overlapping faces.
Every figure is printed with a ``FIGURE`` prefix (run with ``-s``).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from processor.engine import align, device_ops, paste
from processor.engine.device_path import paste_on_device


def _picture(height: int, width: int, seed: int, channels: int = 3) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, channels)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (3, 3), 1).reshape(height, width, channels)


def _rgb_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0).float()


def _levels(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


#: Landmarks (template scaled and moved): inside, across the left/top edges, mostly off the bottom right.
PLACES = [(0.3, (20.0, 30.0)), (0.3, (-60.0, -70.0)), (0.25, (120.0, 130.0)), (0.5, (-20.0, 10.0))]


@pytest.mark.parametrize(("scale", "shift"), PLACES)
def test_face_crop_warp_equals_opencv_within_one_level(scale: float, shift: tuple[float, float]) -> None:
    pixels = _picture(200, 180, seed=1)
    matrix = align.align_matrix(align.FACE_TEMPLATE * scale + shift)
    reference = align.warp_face(np.ascontiguousarray(pixels[:, :, ::-1]), matrix)[:, :, ::-1]
    ours = device_ops.warp_affine(_rgb_tensor(pixels), [matrix], 512, 512, border=device_ops.BORDER_GREY_RGB)
    ours = ours.round()[0].permute(1, 2, 0).numpy()
    diff = _levels(ours, reference)
    print(f"FIGURE crop_warp_vs_opencv[{scale},{shift}]_max_abs_diff={diff} share_differing={np.mean(ours != reference):.4f}")
    assert diff <= 1


def test_mask_equals_the_reference_mask() -> None:
    classes = np.zeros((512, 512), np.int64)
    classes[60:470, 90:420] = 1   # skin
    classes[300:340, :] = 14      # neck: not face
    classes[5:40, 200:260] = 17   # hair of class 17: not face
    reference = paste.mask_from_parsing(classes)
    ours = device_ops.mask_from_classes(torch.from_numpy(classes)[None])[0, 0].numpy()
    error = float(np.abs(ours - reference).max())
    print(f"FIGURE mask_vs_reference_max_abs_diff={error:.2e} (mask in 0-1)")
    assert error < 1e-5
    assert ours[:10].max() == 0 and ours[:, -10:].max() == 0 and 0 < ours[256, 256] <= 1


def test_blur_equals_opencv_with_reflect_101_borders() -> None:
    values = np.random.default_rng(3).random((64, 80)).astype(np.float32) * 255
    reference = cv2.GaussianBlur(values.astype(np.float64), (31, 31), 5)
    ours = device_ops.gaussian_blur(torch.from_numpy(values)[None, None], 31, 5)[0, 0].numpy()
    assert float(np.abs(ours - reference).max()) < 1e-3


def _faces_and_masks(count: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    faces = [cv2.GaussianBlur(rng.integers(0, 256, (512, 512, 3)).astype(np.uint8), (5, 5), 2) for _ in range(count)]
    masks = []
    for _ in range(count):
        classes = np.zeros((512, 512), np.int64)
        top, left = rng.integers(40, 120, 2)
        classes[top:top + 300, left:left + 280] = 1
        masks.append(paste.mask_from_parsing(classes))
    return faces, masks


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_paste_equals_the_reference_paste_with_overlapping_faces_at_the_edges(dtype: type) -> None:
    height, width = 150, 170
    background = _picture(height, width, seed=5, channels=4).astype(dtype)
    if dtype == np.uint16:
        background = background * 257
    # Two overlapping faces in the middle, one across the top-left corner, one mostly off the right.
    landmarks = [align.FACE_TEMPLATE * 0.2 + (20, 20), align.FACE_TEMPLATE * 0.22 + (45, 30),
                 align.FACE_TEMPLATE * 0.2 - (40, 45), align.FACE_TEMPLATE * 0.2 + (140, 60)]
    matrices = [align.paste_matrix(align.align_matrix(points / 2), 2.0) for points in landmarks]
    faces, masks = _faces_and_masks(len(landmarks), seed=6)
    reference = paste.paste_faces(background, faces, masks, matrices)

    tensor = torch.from_numpy(background.astype(np.int32) if dtype == np.uint16 else background)
    face_t = torch.stack([torch.from_numpy(f[:, :, ::-1].copy()).permute(2, 0, 1).float() for f in faces])
    mask_t = torch.stack([torch.from_numpy(m).float()[None] for m in masks])
    ours = paste_on_device(tensor, face_t, mask_t, matrices, gain=257.0 if dtype == np.uint16 else 1.0)
    ours = ours.numpy().astype(dtype)
    step = 257 if dtype == np.uint16 else 1
    diff = _levels(ours, reference) / step
    print(f"FIGURE paste_vs_reference[{np.dtype(dtype).name}]_max_abs_diff={diff:.2f} levels of 8 bits")
    assert diff <= 2
    np.testing.assert_array_equal(ours[:, :, 3], background[:, :, 3])  # alpha untouched
    assert _levels(ours, background) > 20  # the faces really landed
