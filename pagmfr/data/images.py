"""Decoding and resizing of dataset images and masks, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

Size = tuple[int, int]  # (height, width)


class ImageReadError(ValueError):
    """An image or mask file that cannot be decoded; ``path`` names it."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def as_size(image_size: int | tuple[int, int]) -> Size:
    """``256`` -> ``(256, 256)``; validates that both sides are positive integers."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(
            f"image_size must be a positive int or (height, width), got {image_size!r}"
        )
    return size  # type: ignore[return-value]


def _decode(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(path, f"cannot read file ({err.strerror or err})") from err
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if decoded is None:
        raise ImageReadError(
            path,
            "not a readable image (empty, truncated or not an image file); "
            "replace it with a valid PNG",
        )
    return decoded


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:  # 16-bit PNGs: 65535 -> 255, rounded
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise ImageReadError(path, f"unsupported pixel type {array.dtype}; expected 8- or 16-bit")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3): grey becomes 3 channels, alpha is dropped."""
    path = Path(path)
    image = _to_uint8(_decode(path), path)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageReadError(path, f"{channels} channels; expected grey, RGB or RGBA")


def read_mask(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask as bool (H, W): any non-zero pixel is defective."""
    path = Path(path)
    mask = _decode(path)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    return mask > 0


def resize_rgb(image: np.ndarray, size: Size) -> np.ndarray:
    """Area interpolation when shrinking (no aliasing), bilinear when enlarging."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def resize_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    """Nearest neighbour, so masks stay binary."""
    height, width = size
    if mask.shape[:2] == (height, width):
        return mask
    resized = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return resized > 0


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write uint8 RGB (H, W, 3) or grey/bool (H, W) as PNG; byte-identical for equal input."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(encoded.tobytes())


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted so every process sees the same order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
