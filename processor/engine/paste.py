"""Step 5: paste restored faces into the upsampled background through a soft face-parsing mask.

The mask follows the reference: ParseNet's 19 classes become face (skin, brows, eyes, nose, mouth,
lips, hair ...) or not (background, neck, cloth, hat, earrings), the map is blurred twice with a
101-pixel Gaussian, its 10-pixel rim is cleared, and it is warped into place with the face.
The blend is the reference's float64 ``mask * face + (1 - mask) * background``, truncated to
integers, but computed only inside each face's footprint (overlapping faces together, in order)
instead of over the whole output picture: at 25 megapixels that whole-picture pass cost 1.5 s a face.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from processor.engine.align import FACE_SIZE

__all__ = ["face_footprint", "mask_from_parsing", "parse_faces", "paste_faces", "warp_float_region"]

#: Mask value (0-255) of each ParseNet class.
_CLASS_MASK = np.array([0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0],
                       dtype=np.float64)
_BLUR_SIZE, _BLUR_SIGMA, _RIM = 101, 11, 10
#: OpenCV's warp arithmetic: source coordinates in 1/1024 pixel, interpolated in 1/32 steps.
_AB_BITS, _AB_SCALE, _INTER_BITS, _TAB_SIZE = 10, 1024, 5, 32


def parse_faces(
    parser: torch.nn.Module, faces: Sequence[np.ndarray], device: torch.device, *, max_batch: int = 4
) -> list[np.ndarray]:
    """Soft masks (512 x 512 float64 in [0, 1]) for BGR uint8 restored faces, ``max_batch`` per forward."""
    masks = []
    for start in range(0, len(faces), max_batch):
        chunk = faces[start:start + max_batch]
        rgb = np.stack([(face.astype(np.float32) / 255.0)[:, :, ::-1] for face in chunk]).transpose(0, 3, 1, 2)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).sub_(0.5).div_(0.5).to(device)
        with torch.no_grad():
            classes = parser(x)[0].argmax(dim=1).cpu().numpy()
        masks.extend(mask_from_parsing(c) for c in classes)
    return masks


def mask_from_parsing(classes: np.ndarray) -> np.ndarray:
    """A soft 0-1 mask from a 512 x 512 map of ParseNet class indices."""
    mask = _CLASS_MASK[classes]
    mask = cv2.GaussianBlur(mask, (_BLUR_SIZE, _BLUR_SIZE), _BLUR_SIGMA)
    mask = cv2.GaussianBlur(mask, (_BLUR_SIZE, _BLUR_SIZE), _BLUR_SIGMA)
    mask[:_RIM, :] = 0
    mask[-_RIM:, :] = 0
    mask[:, :_RIM] = 0
    mask[:, -_RIM:] = 0
    return mask / 255.0


def face_footprint(matrix: np.ndarray, height: int, width: int, margin: int = 2) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the output pixels the 512 crop lands on under ``matrix``; None if off-picture."""
    corners = np.array([[0, 0, 1], [FACE_SIZE, 0, 1], [0, FACE_SIZE, 1], [FACE_SIZE, FACE_SIZE, 1]], float)
    points = corners @ matrix.T
    x0 = max(int(np.floor(points[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(points[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(points[:, 0].max())) + margin, width)
    y1 = min(int(np.ceil(points[:, 1].max())) + margin, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def paste_faces(
    background: np.ndarray, faces: Sequence[np.ndarray], masks: Sequence[np.ndarray], matrices: Sequence[np.ndarray]
) -> np.ndarray:
    """Blend BGR uint8 ``faces`` into the RGB(A) ``background`` (uint8 or uint16) at ``matrices``.

    Returns a new array; alpha, if any, is kept as it is.
    """
    out = background.copy()
    height, width = out.shape[:2]
    gain = 257.0 if out.dtype == np.uint16 else 1.0  # a face is 8-bit; a 16-bit picture needs it scaled
    placed = [(face_footprint(m, height, width), face, mask, m) for face, mask, m in zip(faces, masks, matrices)]
    for region, group in _overlap_groups([p for p in placed if p[0] is not None]):
        x0, y0, x1, y1 = region
        canvas = out[y0:y1, x0:x1, :3].astype(np.float64)
        for _, face, mask, matrix in group:
            shifted = matrix.copy()
            shifted[:, 2] -= (x0, y0)
            size = (x1 - x0, y1 - y0)
            warped = cv2.warpAffine(np.ascontiguousarray(face[:, :, ::-1]), shifted, size).astype(np.float64) * gain
            soft = warp_float_region(mask, matrix, region)[:, :, None]
            canvas = soft * warped + (1 - soft) * canvas
        out[y0:y1, x0:x1, :3] = canvas.astype(out.dtype)
    return out


def warp_float_region(src: np.ndarray, matrix: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """``cv2.warpAffine(src, matrix, full_size)[y0:y1, x0:x1]`` for a float ``src``, without the full size.

    Shifting the matrix instead would move OpenCV's fixed-point source coordinates by a rounding
    step (1/32 pixel) here and there; on the steep edge of a blurred mask that alone changed the blend
    by up to 8 levels. So the fixed-point map is built as warpAffine builds it for the whole picture
    (1/1024-pixel steps, rounded to 1/32 with bilinear weights from OpenCV's table), for the region
    only, and handed to remap.
    """
    x0, y0, x1, y1 = region
    inverse = cv2.invertAffineTransform(matrix)
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)
    half_step = _AB_SCALE // _TAB_SIZE // 2
    x_part = np.rint(inverse[0, 0] * xs * _AB_SCALE).astype(np.int64)
    y_part = np.rint(inverse[1, 0] * xs * _AB_SCALE).astype(np.int64)
    x_row = np.rint((inverse[0, 1] * ys + inverse[0, 2]) * _AB_SCALE).astype(np.int64) + half_step
    y_row = np.rint((inverse[1, 1] * ys + inverse[1, 2]) * _AB_SCALE).astype(np.int64) + half_step
    shift = _AB_BITS - _INTER_BITS
    fx = (x_row[:, None] + x_part[None, :]) >> shift
    fy = (y_row[:, None] + y_part[None, :]) >> shift
    whole = np.stack([fx >> _INTER_BITS, fy >> _INTER_BITS], axis=2).clip(-32768, 32767).astype(np.int16)
    fraction = ((fy & (_TAB_SIZE - 1)) * _TAB_SIZE + (fx & (_TAB_SIZE - 1))).astype(np.uint16)
    return cv2.remap(src, whole, fraction, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _overlap_groups(placed: list) -> list[tuple[tuple[int, int, int, int], list]]:
    """Merge faces whose footprints overlap, so overlapping blends stay in float64 together, in order."""
    groups: list[tuple[tuple[int, int, int, int], list]] = []
    for item in placed:
        region, members = item[0], [item]
        merged = True
        while merged:
            merged = False
            for other in groups:
                if _intersects(region, other[0]):
                    groups.remove(other)
                    members = other[1] + members
                    region = (min(region[0], other[0][0]), min(region[1], other[0][1]),
                              max(region[2], other[0][2]), max(region[3], other[0][3]))
                    merged = True
                    break
        groups.append((region, members))
    for _, members in groups:  # keep the caller's order inside a group: later faces paste over earlier
        members.sort(key=lambda member: next(i for i, p in enumerate(placed) if p is member))
    return groups


def _intersects(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
