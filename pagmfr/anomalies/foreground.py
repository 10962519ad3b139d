"""Where the object is in a normal image, so object anomalies land on it, not the background.

MVTec objects sit on a fairly plain background: pixels far (in colour) from the border's
median colour are foreground. Runs on a 64 px thumbnail, so it is cheap per sample.
"""

from __future__ import annotations

import cv2
import numpy as np

from pagmfr.anomalies.sources import largest_component

_THUMB = 64


def foreground_mask(
    image: np.ndarray, min_fraction: float = 0.02, max_fraction: float = 0.95
) -> np.ndarray:
    """Bool (H, W) foreground of a uint8 RGB image; the whole image when the estimate is
    implausible (smaller than ``min_fraction`` or larger than ``max_fraction``), since an
    anomaly anywhere beats no anomaly."""
    height, width = image.shape[:2]
    thumb = cv2.resize(image, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
    edges = (thumb[:2], thumb[-2:], thumb[:, :2], thumb[:, -2:])
    border = np.concatenate([edge.reshape(-1, 3) for edge in edges])
    distance = np.linalg.norm(thumb - np.median(border, axis=0), axis=2)
    distance = cv2.GaussianBlur(distance, (5, 5), 0)
    scaled = np.uint8(np.clip(distance / max(distance.max(), 1e-6) * 255, 0, 255))
    _, binary = cv2.threshold(scaled, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    mask = largest_component(binary)
    if not min_fraction <= mask.mean() <= max_fraction:
        return np.ones((height, width), dtype=bool)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST) > 0
