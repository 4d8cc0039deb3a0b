"""Step 1: find faces and their five landmarks with RetinaFace, batching images of equal size.

Numerically this follows facexlib's ``RetinaFace.detect_faces`` at the original size (BGR input
minus the per-channel mean, softmax scores above 0.97, NMS at 0.4) and GFPGAN's selection rules
(faces whose eyes are under 5 pixels apart are skipped; optionally only the face nearest the centre).
The anchor grid is built with numpy instead of a Python loop: for a 24-megapixel photo the loop alone
took seconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Face", "anchors", "detect_faces", "select_faces", "to_face_canvas"]

#: Per-channel mean (B, G, R) RetinaFace was trained with.
_BGR_MEAN = (104.0, 117.0, 123.0)
#: RetinaFace R50's anchor sizes per feature level, strides and box variances.
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_STEPS = (8, 16, 32)
_VARIANCE = (0.1, 0.2)


@dataclass(frozen=True)
class Face:
    """One detected (or given) face, in input-image pixel coordinates."""

    #: (x1, y1, x2, y2).
    box: tuple[float, float, float, float]
    score: float
    #: (5, 2): left eye, right eye, nose, left and right mouth corners.
    landmarks: np.ndarray

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[0] - self.landmarks[1]))

    def to_report(self) -> dict[str, object]:
        """JSON-ready facts for the per-image report."""
        x1, y1, x2, y2 = (round(float(v), 1) for v in self.box)
        return {"box": [x1, y1, x2, y2], "score": round(float(self.score), 4),
                "eye_distance": round(self.eye_distance, 1), "size": round(max(x2 - x1, y2 - y1), 1)}

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> Face:
        """A face known only by its landmarks (a caller-supplied face): its box spans them."""
        points = np.asarray(landmarks, np.float64).reshape(5, 2)
        x1, y1 = points.min(axis=0)
        x2, y2 = points.max(axis=0)
        return cls((float(x1), float(y1), float(x2), float(y2)), 1.0, points)


def to_face_canvas(pixels: np.ndarray) -> np.ndarray:
    """The 3-channel BGR picture the face steps see: alpha dropped, grey widened, 16 bits scaled to 0-255.

    8-bit input stays uint8; 16-bit input becomes float64 in 0-255, as the reference does.
    """
    if pixels.shape[2] == 1:
        bgr = np.repeat(pixels, 3, axis=2)
    else:
        bgr = np.ascontiguousarray(pixels[:, :, 2::-1])
    if bgr.dtype == np.uint16:
        return bgr / 65535.0 * 255.0
    return bgr


def anchors(height: int, width: int) -> np.ndarray:
    """RetinaFace's prior boxes (cx, cy, w, h; relative units) for an input of ``height`` x ``width``."""
    rows = []
    for sizes, step in zip(_MIN_SIZES, _STEPS):
        fh, fw = -(-height // step), -(-width // step)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step / height, (np.arange(fw) + 0.5) * step / width,
                             indexing="ij")
        cells = np.stack([cx.ravel(), cy.ravel()], axis=1)
        per_size = [np.hstack([cells, np.tile([size / width, size / height], (len(cells), 1))]) for size in sizes]
        rows.append(np.stack(per_size, axis=1).reshape(-1, 4))  # cell-major, then anchor size
    return np.concatenate(rows).astype(np.float32)


def detect_faces(
    detector: torch.nn.Module,
    canvases: Sequence[np.ndarray],
    device: torch.device,
    *,
    threshold: float = 0.97,
    nms_threshold: float = 0.4,
    max_batch: int = 4,
) -> list[list[Face]]:
    """Faces of every canvas (see :func:`to_face_canvas`), best score first.

    Canvases of equal size share forwards of at most ``max_batch`` images.
    """
    found: list[list[Face]] = [[] for _ in canvases]
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, canvas in enumerate(canvases):
        by_shape[canvas.shape[:2]].append(index)
    mean = torch.tensor(_BGR_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    for (height, width), indices in by_shape.items():
        priors = torch.from_numpy(anchors(height, width)).to(device)
        for start in range(0, len(indices), max_batch):
            chunk = indices[start:start + max_batch]
            batch = np.stack([canvases[i].astype(np.float32) for i in chunk]).transpose(0, 3, 1, 2)
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(batch)).to(device) - mean
                loc, conf, marks = detector(x)
            for row, index in enumerate(chunk):
                found[index] = _decode(loc[row], conf[row], marks[row], priors, width, height,
                                       threshold, nms_threshold)
    return found


def select_faces(
    faces: list[Face], height: int, width: int, *, only_center_face: bool, min_eye_distance: float = 5.0
) -> list[Face]:
    """Drop faces whose eyes are too close (side or tiny faces); keep only the central one if asked."""
    kept = [face for face in faces if face.eye_distance >= min_eye_distance]
    if only_center_face and kept:
        centre = np.array([width / 2, height / 2])

        def distance(face: Face) -> float:
            x1, y1, x2, y2 = face.box
            return float(np.linalg.norm(np.array([(x1 + x2) / 2, (y1 + y2) / 2]) - centre))

        kept = [min(kept, key=distance)]
    return kept


def _decode(
    loc: torch.Tensor, conf: torch.Tensor, marks: torch.Tensor, priors: torch.Tensor,
    width: int, height: int, threshold: float, nms_threshold: float,
) -> list[Face]:
    """Boxes and landmarks of one image from the network's raw outputs."""
    from facexlib.detection.retinaface_utils import decode, decode_landm, py_cpu_nms

    scale = torch.tensor([width, height] * 2, dtype=torch.float32, device=loc.device)
    scale_marks = torch.tensor([width, height] * 5, dtype=torch.float32, device=loc.device)
    boxes = (decode(loc, priors, _VARIANCE) * scale).cpu().numpy()
    points = (decode_landm(marks, priors, _VARIANCE) * scale_marks).cpu().numpy()
    scores = conf[:, 1].cpu().numpy()
    keep = np.where(scores > threshold)[0]
    boxes, points, scores = boxes[keep], points[keep], scores[keep]
    order = scores.argsort()[::-1]
    boxes, points, scores = boxes[order], points[order], scores[order]
    dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
    keep = py_cpu_nms(dets, nms_threshold)
    return [Face(tuple(float(v) for v in dets[i, :4]), float(dets[i, 4]), points[i].reshape(5, 2))
            for i in keep]
