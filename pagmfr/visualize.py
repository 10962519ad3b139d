"""Heatmap overlays and the original | ground truth | heatmap rows written per test image."""

from __future__ import annotations

import cv2
import numpy as np


def heatmap_overlay(
    image: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5
) -> np.ndarray:
    """uint8 RGB image with a JET heatmap of ``anomaly_map`` (scaled from [vmin, vmax])."""
    scaled = np.clip((anomaly_map - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    heat = cv2.applyColorMap(np.uint8(scaled * 255), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    if heat.shape[:2] != image.shape[:2]:
        heat = cv2.resize(heat, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)


def comparison_row(
    image: np.ndarray, mask: np.ndarray | None, anomaly_map: np.ndarray, vmin: float, vmax: float
) -> np.ndarray:
    """original | ground truth (white on black) | heatmap overlay, with thin white gaps."""
    height, width = image.shape[:2]
    truth = np.zeros((height, width, 3), np.uint8)
    if mask is not None:
        truth[
            cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        ] = 255
    gap = np.full((height, 4, 3), 255, np.uint8)
    return np.hstack([image, gap, truth, gap, heatmap_overlay(image, anomaly_map, vmin, vmax)])
