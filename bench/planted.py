"""Faces "found" by a randomly initialised detector, so benchmarks time the real detection step.

Offline the benchmarks run on random weights (``harness/weights.py``), and a random RetinaFace
finds no face: the face steps would never run. Handing the engine the landmarks instead skips the
detector's forward, which a real photo pays. :func:`planted` keeps the forward and, after it, writes
chosen faces into the raw outputs: one anchor per face gets a face score of 1 and the box and
landmark offsets that decode to that face. Everything after the forward (decoding, threshold, NMS,
selection) then runs as for a real detection. It works on any module called as ``module(x)`` with
RetinaFace's outputs, so the engine's detector and the stock ``GFPGANer``'s (facexlib) alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from processor.engine import detect

__all__ = ["Encoded", "encode_faces", "face_box", "plant", "planted"]

#: RetinaFace's box variances (centre, size), as its decoder applies them.
_CENTRE_VARIANCE, _SIZE_VARIANCE = 0.1, 0.2


@dataclass(frozen=True)
class Encoded:
    """One planted face as the detector's raw outputs for one anchor."""

    anchor: int
    #: (4,) box offsets: centre x, y, then log size w, h, in RetinaFace's encoding.
    loc: np.ndarray
    #: (10,) landmark offsets, x and y of each of the five points.
    marks: np.ndarray


def face_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """A detector-like box (x1, y1, x2, y2) around five landmarks: their span, widened by half each way."""
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
    side = max(x2 - x1, y2 - y1)
    return x1 - side / 2, y1 - side / 2, x2 + side / 2, y2 + side / 2


def encode_faces(faces: Sequence[np.ndarray], priors: np.ndarray, width: int, height: int) -> list[Encoded]:
    """Raw outputs that decode to ``faces`` ((5, 2) landmarks each, input pixels), one anchor per face.

    Each face takes the unused anchor whose size is nearest its box's (in log scale), then nearest
    its centre; offsets are the exact inverse of RetinaFace's decoding from that anchor.
    """
    used: set[int] = set()
    encoded = []
    scale = np.array([width, height], np.float64)
    for landmarks in faces:
        x1, y1, x2, y2 = face_box(landmarks)
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) / scale
        size = np.array([x2 - x1, y2 - y1]) / scale
        size_gap = np.abs(np.log(priors[:, 2] * width) - np.log(max(x2 - x1, 1e-6)))
        distance = np.linalg.norm(priors[:, :2] - centre, axis=1)
        order = np.lexsort((distance, np.round(size_gap, 6)))
        anchor = int(next(i for i in order if int(i) not in used))
        used.add(anchor)
        prior = priors[anchor].astype(np.float64)
        step = _CENTRE_VARIANCE * prior[2:]
        loc = np.concatenate([(centre - prior[:2]) / step, np.log(size / prior[2:]) / _SIZE_VARIANCE])
        points = np.asarray(landmarks, np.float64).reshape(5, 2) / scale
        marks = ((points - prior[:2]) / step).reshape(10)
        encoded.append(Encoded(anchor, loc, marks))
    return encoded


def plant(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], faces: Sequence[np.ndarray],
          *, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RetinaFace's (loc, conf, landmarks) for a batch with ``faces`` written into every image."""
    loc, conf, marks = (t.clone() for t in outputs)
    for face in encode_faces(faces, detect.anchors(height, width), width, height):
        loc[:, face.anchor] = torch.as_tensor(face.loc, dtype=loc.dtype, device=loc.device)
        conf[:, face.anchor] = torch.tensor([0.0, 1.0], dtype=conf.dtype, device=conf.device)
        marks[:, face.anchor] = torch.as_tensor(face.marks, dtype=marks.dtype, device=marks.device)
    return loc, conf, marks


@contextmanager
def planted(detector: torch.nn.Module, faces: Sequence[np.ndarray]) -> Iterator[None]:
    """Within the block, every forward of ``detector`` also reports ``faces`` (same places in every image).

    The detector's own forward still runs first, so its time and FLOPs are those of a real detection.
    """
    original = detector.forward

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return plant(original(x), faces, height=int(x.shape[2]), width=int(x.shape[3]))

    detector.forward = forward  # an instance attribute: module(x) calls it instead of the class's
    try:
        yield
    finally:
        del detector.forward
