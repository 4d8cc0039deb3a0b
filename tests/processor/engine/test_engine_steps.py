"""The engine's steps one by one, on small inputs and tiny networks (no weight files needed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from processor.engine import align, background, detect, paste, restore
from processor.engine.networks import BackgroundNet

# -- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(50, 70), (64, 64), (33, 97)])
def test_anchor_grid_equals_facexlibs_prior_boxes(height: int, width: int) -> None:
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    expected = PriorBox(generate_config("resnet50"), image_size=(height, width)).forward().numpy()
    np.testing.assert_array_equal(detect.anchors(height, width), expected)


def _face(cx: float, cy: float, eye_gap: float = 20.0) -> detect.Face:
    half = eye_gap / 2
    points = np.array([[cx - half, cy], [cx + half, cy], [cx, cy + 8], [cx - half, cy + 16], [cx + half, cy + 16]])
    return detect.Face.from_landmarks(points)


def test_select_faces_drops_close_eyes_and_can_keep_only_the_centre_face() -> None:
    faces = [_face(20, 20), _face(50, 50), _face(80, 20, eye_gap=3)]
    assert len(detect.select_faces(faces, 100, 100, only_center_face=False)) == 2
    [centre] = detect.select_faces(faces, 100, 100, only_center_face=True)
    assert centre is faces[1]
    assert detect.select_faces([], 10, 10, only_center_face=True) == []


def test_face_canvas_is_bgr_without_alpha_and_scales_16_bits() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    canvas = detect.to_face_canvas(rgba)
    assert canvas.shape == (2, 2, 3) and canvas[0, 0, 2] == 200 and canvas[0, 0, 0] == 0
    grey16 = np.full((2, 2, 1), 65535, np.uint16)
    assert detect.to_face_canvas(grey16).max() == pytest.approx(255.0)


# -- alignment, restoration -----------------------------------------------------------------------


def test_align_maps_the_landmarks_onto_the_template() -> None:
    matrix = align.align_matrix(align.FACE_TEMPLATE * 0.25 + 10)
    mapped = np.hstack([align.FACE_TEMPLATE * 0.25 + 10, np.ones((5, 1))]) @ matrix.T
    np.testing.assert_allclose(mapped, align.FACE_TEMPLATE, atol=1e-3)
    crop = align.warp_face(np.zeros((200, 200, 3), np.uint8), align.align_matrix(align.FACE_TEMPLATE * 0.25 - 20))
    assert crop.shape == (512, 512, 3)
    assert tuple(crop[0, 0]) == (135, 133, 132)  # outside the picture: neutral grey
    assert tuple(crop[511, 511]) == (0, 0, 0)


def test_paste_matrix_inverts_the_alignment_at_the_output_scale() -> None:
    matrix = align.align_matrix(align.FACE_TEMPLATE * 0.25 + 10)
    back = align.paste_matrix(matrix, 1.0)
    point = np.array([align.FACE_TEMPLATE[2][0], align.FACE_TEMPLATE[2][1], 1.0])
    np.testing.assert_allclose(back @ point, align.FACE_TEMPLATE[2] * 0.25 + 10, atol=1e-3)


def test_face_tensor_round_trip_is_exact() -> None:
    faces = [np.random.default_rng(i).integers(0, 256, (8, 8, 3)).astype(np.uint8) for i in range(3)]
    batch = restore.faces_to_tensor(faces)
    assert batch.shape == (3, 3, 8, 8) and batch.min() >= -1 and batch.max() <= 1
    assert torch.allclose(batch[0, 0], torch.from_numpy(faces[0][:, :, 2] / 127.5 - 1).float(), atol=1e-6)
    for face, back in zip(faces, restore.tensor_to_faces(batch)):
        np.testing.assert_array_equal(face, back)


def test_fidelity_blends_restored_and_aligned_faces() -> None:
    restored = np.full((4, 4, 3), 200, np.uint8)
    aligned = np.full((4, 4, 3), 100, np.uint8)
    assert restore.apply_fidelity(restored, aligned, 1.0) is restored
    np.testing.assert_array_equal(restore.apply_fidelity(restored, aligned, 0.0), aligned)
    np.testing.assert_array_equal(restore.apply_fidelity(restored, aligned, 0.25), np.full((4, 4, 3), 125))


# -- background tiling ------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "tile", "pad", "multiple"),
                         [(100, 140, 32, 8, 1), (64, 64, 64, 8, 1), (90, 50, 30, 7, 2), (20, 300, 64, 16, 2)])
def test_windows_have_one_shape_lie_inside_and_their_cores_tile_the_plane(height, width, tile, pad, multiple) -> None:
    windows = background.plan_windows(height, width, tile=tile, pad=pad, multiple=multiple)
    covered = np.zeros((height, width), int)
    shapes = set()
    for w in windows:
        wy, wx, wh, ww = w.window
        cy, cx, ch, cw = w.core
        assert 0 <= wy and wy + wh <= height and 0 <= wx and wx + ww <= width
        assert wy <= cy and cy + ch <= wy + wh and wx <= cx and cx + cw <= wx + ww
        assert wy % multiple == 0 and wx % multiple == 0 and wh % multiple == 0 and ww % multiple == 0
        covered[cy:cy + ch, cx:cx + cw] += 1
        shapes.add((wh, ww))
    assert (covered == 1).all()
    assert len(shapes) == 1


def test_no_tile_means_one_window() -> None:
    [whole] = background.plan_windows(30, 40, tile=0, pad=8)
    assert whole.window == whole.core == (0, 0, 30, 40)


class _Upsample2(torch.nn.Module):
    """A tiny fixed network with a 5-pixel receptive field: two 3x3 convolutions, then x2 nearest."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(self.b(torch.relu(self.a(x))))
        return torch.nn.functional.interpolate(y, scale_factor=2, mode="nearest")


def test_tiles_of_several_images_batched_equal_each_image_untiled() -> None:
    net = BackgroundNet(_Upsample2().eval(), scale=2, key="tiny", multiple=2)
    rng = np.random.default_rng(3)
    planes = [rng.random((h, w, 3), dtype=np.float32) for h, w in [(40, 56), (40, 56), (30, 70)]]
    cpu = torch.device("cpu")
    whole = [background.upsample_planes(net, [p], cpu, tiles=[0])[0] for p in planes]
    tiled = background.upsample_planes(net, planes, cpu, tiles=[16, 16, 16], pad=4, max_batch=5)
    for w, t in zip(whole, tiled):
        assert t.shape == w.shape
        np.testing.assert_allclose(t, w, atol=1e-6)


def test_planes_split_colour_and_alpha_and_finish_restores_layout() -> None:
    rgba = np.dstack([np.full((4, 6, 3), 255, np.uint8), np.full((4, 6), 51, np.uint8)])
    colour, alpha = background.prepare_planes(rgba)
    assert colour.shape == (4, 6, 3) and colour.max() == 1.0
    assert alpha.shape == (4, 6, 3) and alpha[0, 0, 0] == pytest.approx(0.2)
    finished = background.finish_planes([np.repeat(np.repeat(p, 2, 0), 2, 1) for p in (colour, alpha)], 4,
                                        np.dtype(np.uint8), (12, 8))
    assert finished.shape == (8, 12, 4) and finished[0, 0, 3] == 51
    [grey] = background.prepare_planes(np.full((2, 2, 1), 65535, np.uint16))
    assert grey.shape == (2, 2, 3) and grey.max() == 1.0


# -- paste-back -------------------------------------------------------------------------------------


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def test_region_warp_equals_the_whole_picture_warp_exactly() -> None:
    mask = cv2.GaussianBlur(np.random.default_rng(0).random((512, 512)), (101, 101), 11)
    matrix = _similarity(0.37, 0.3, 40.5, 12.25)
    full = cv2.warpAffine(mask, matrix, (300, 260), flags=cv2.INTER_AREA)
    region = paste.face_footprint(matrix, 260, 300)
    x0, y0, x1, y1 = region
    np.testing.assert_array_equal(paste.warp_float_region(mask, matrix, region), full[y0:y1, x0:x1])
    assert full.sum() == pytest.approx(full[y0:y1, x0:x1].sum())


def test_footprint_is_none_off_picture() -> None:
    assert paste.face_footprint(_similarity(0.1, 0, 500, 500), 100, 100) is None


def test_mask_from_parsing_is_soft_and_clears_its_rim() -> None:
    classes = np.zeros((512, 512), np.int64)
    classes[100:400, 150:350] = 1  # skin
    mask = paste.mask_from_parsing(classes)
    assert mask.shape == (512, 512) and 0 <= mask.min() and mask.max() <= 1
    assert mask[250, 250] > 0.95 and mask[:10].max() == 0 and mask[:, -10:].max() == 0
    assert 0.05 < mask[250, 150] < 0.95  # soft edge


def test_paste_equals_the_whole_picture_blend_and_keeps_alpha() -> None:
    rng = np.random.default_rng(5)
    bg = np.dstack([rng.integers(0, 256, (120, 140, 3)), np.full((120, 140), 77)]).astype(np.uint8)
    faces = [rng.integers(0, 256, (512, 512, 3)).astype(np.uint8) for _ in range(2)]
    classes = np.zeros((512, 512), np.int64)
    classes[80:450, 100:420] = 1
    masks = [paste.mask_from_parsing(classes)] * 2
    matrices = [_similarity(0.15, 0.2, 20, 10), _similarity(0.12, -0.1, 45, 30)]  # overlapping faces
    out = paste.paste_faces(bg, faces, masks, matrices)
    expected = bg[:, :, :3].astype(np.float64)
    for face, mask, matrix in zip(faces, masks, matrices):
        warped = cv2.warpAffine(np.ascontiguousarray(face[:, :, ::-1]), matrix, (140, 120))
        soft = cv2.warpAffine(mask, matrix, (140, 120), flags=cv2.INTER_AREA)[:, :, None]
        expected = soft * warped + (1 - soft) * expected
    diff = np.abs(out[:, :, :3].astype(int) - expected.astype(np.uint8))
    assert diff.max() <= 1  # the face warp runs on the footprint only: 1/32-pixel rounding at most
    assert (out[:, :, 3] == 77).all()
    assert not np.array_equal(out[:, :, :3], bg[:, :, :3])
