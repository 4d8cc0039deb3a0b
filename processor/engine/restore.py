"""Step 3: restore every aligned face of a micro-batch with GFPGAN, in forwards of at most N faces.

StyleGAN's noise is the stored one (``randomize_noise=False``): with fresh noise per call two runs
on the same face differ, and a face's result would depend on its batch-mates. With it fixed, a face
restored in a batch of four equals the face restored alone to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["apply_fidelity", "faces_to_tensor", "restore_faces", "tensor_to_faces"]


def faces_to_tensor(faces: Sequence[np.ndarray]) -> torch.Tensor:
    """BGR 512 crops (uint8, or float 0-255) to an RGB float32 batch in [-1, 1]."""
    rgb = np.stack([(face / 255.0).astype(np.float32)[:, :, ::-1] for face in faces])
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))).sub_(0.5).div_(0.5)


def tensor_to_faces(batch: torch.Tensor) -> list[np.ndarray]:
    """An RGB batch in [-1, 1] back to BGR uint8 crops (rounded, as the reference rounds)."""
    images = ((batch.float().cpu().clamp_(-1, 1) + 1) / 2).numpy().transpose(0, 2, 3, 1)
    return [np.ascontiguousarray((image[:, :, ::-1] * 255.0).round()).astype(np.uint8) for image in images]


def restore_faces(
    restorer: torch.nn.Module,
    faces: Sequence[np.ndarray],
    device: torch.device,
    *,
    max_batch: int = 4,
    dtype: torch.dtype = torch.float32,
) -> list[np.ndarray]:
    """Restored BGR uint8 crops for all ``faces``, in order, in forwards of ``max_batch``."""
    restored: list[np.ndarray] = []
    for start in range(0, len(faces), max_batch):
        batch = faces_to_tensor(faces[start:start + max_batch]).to(device=device, dtype=dtype)
        with torch.no_grad():
            output, _ = restorer(batch, return_rgb=False, randomize_noise=False)
        restored.extend(tensor_to_faces(output))
    return restored


def apply_fidelity(restored: np.ndarray, aligned: np.ndarray, fidelity: float) -> np.ndarray:
    """Blend the restored face with the aligned input: 1 keeps the restoration, 0 the original face.

    GFPGAN v1.4's own ``weight`` argument does nothing in the clean architecture, so this blend is
    the fidelity control users get.
    """
    if fidelity >= 1.0:
        return restored
    aligned8 = np.clip(np.rint(aligned), 0, 255).astype(np.uint8) if aligned.dtype != np.uint8 else aligned
    if fidelity <= 0.0:
        return aligned8.copy()
    mixed = fidelity * restored.astype(np.float32) + (1.0 - fidelity) * aligned8.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
