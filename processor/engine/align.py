"""Step 2: align each face to GFPGAN's 512 x 512 FFHQ template with its five landmarks.

A similarity transform (rotation, uniform scale, shift) fitted with LMedS, as the reference does, so
a single wrong landmark cannot skew the crop; outside the picture the crop is filled with a neutral
grey. The inverse transform, scaled to the output size, places the restored face back.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["FACE_SIZE", "FACE_TEMPLATE", "align_matrix", "paste_matrix", "warp_face"]

#: Side of the square GFPGAN restores.
FACE_SIZE = 512

#: Where the eyes, nose tip and mouth corners of an FFHQ face sit in a 512 x 512 crop.
FACE_TEMPLATE = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]]
)

#: Fill for crop areas outside the picture (BGR).
_BORDER_GREY = (135, 133, 132)


def align_matrix(landmarks: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity transform taking ``landmarks`` (5, 2) onto :data:`FACE_TEMPLATE`."""
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks), FACE_TEMPLATE, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("the five landmarks do not define a face (degenerate points)")
    return matrix


def warp_face(canvas: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The aligned 512 x 512 face crop of a BGR ``canvas``."""
    return cv2.warpAffine(canvas, matrix, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT,
                          borderValue=_BORDER_GREY)


def paste_matrix(matrix: np.ndarray, upscale: float) -> np.ndarray:
    """The transform from the 512 crop back into the output picture, ``upscale`` times the input.

    The half-pixel shift for upscale > 1 matches the reference's alignment of pixel centres.
    """
    inverse = cv2.invertAffineTransform(matrix) * upscale
    if upscale > 1:
        inverse[:, 2] += 0.5 * upscale
    return inverse
