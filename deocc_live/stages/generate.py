"""Generate stage: every face's aligned crop through the engine in one batch."""
from __future__ import annotations

import numpy as np

from deocc_live.frame import Frame


def crops_to_batch(crops: list[np.ndarray]) -> np.ndarray:
    """BGR uint8 crops -> float32 [N, 3, S, S] RGB in [-1, 1]."""
    batch = np.stack(crops)[..., ::-1].astype(np.float32) * (1 / 127.5) - 1.0
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def batch_to_images(batch: np.ndarray) -> np.ndarray:
    """float [N, 3, S, S] RGB in [-1, 1] -> new float32 (N, S, S, 3) BGR arrays in [0, 1]."""
    images = (batch.transpose(0, 2, 3, 1)[..., ::-1] + 1.0) * 0.5
    return np.clip(images, 0.0, 1.0).astype(np.float32)


class GenerateStage:
    def __init__(self, engine):
        self.engine = engine

    def __call__(self, frame: Frame) -> Frame:
        faces = [face for face in frame.faces if face.crop is not None]
        limit = self.engine.spec.max_batch
        for start in range(0, len(faces), limit):
            group = faces[start:start + limit]
            restored, occlusion = self.engine.infer(crops_to_batch([face.crop for face in group]))
            # The engine may reuse its output buffers: copy what we keep (batch_to_images copies).
            for face, image, mask in zip(group, batch_to_images(restored), occlusion[:, 0]):
                face.restored = image
                face.occlusion = np.array(mask, dtype=np.float32)
        return frame
