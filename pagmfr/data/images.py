"""Decoding and resizing of dataset images and masks, with errors that name the file.

Images and masks alike are turned as their EXIF orientation tag says, as image viewers and
annotation tools show them: a phone's JPEG stores its pixels sideways with a tag to turn them,
and its mask was drawn on the turned picture. (OpenCV applies the tag in some read modes and
not in others; ``IMREAD_UNCHANGED``, which keeps alpha and 16 bits, ignores it, except in
some TIFFs: a turned TIFF is refused.) Each turned file gets a note, which ``pagmfr data
check`` lists.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

Size = tuple[int, int]  # (height, width)

#: The environment variable that sets the largest image (in pixels) read, and its default:
#: full-size MVTec AD 2, BTAD and Real-IAD images pass; a decompression bomb (a 40000 x 40000
#: PNG is 1.6 MB on disk and 4.8 GB decoded) is refused from its header, before decoding.
MAX_PIXELS_VARIABLE, DEFAULT_MAX_PIXELS = "PAGMFR_MAX_IMAGE_PIXELS", 100_000_000


class ImageReadError(ValueError):
    """An image or mask file that cannot be decoded; ``path`` names it.

    Its arguments are ``(path, reason)``, so it survives the copies and pickles Ray makes of a
    failed trial's error: MLflow and the report show this error, not a TypeError.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(self.path, reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def as_size(image_size: int | tuple[int, int]) -> Size:
    """``256`` -> ``(256, 256)``; validates that both sides are positive integers."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(
            f"image_size must be a positive int or (height, width), got {image_size!r}"
        )
    return size  # type: ignore[return-value]


#: The EXIF tag that says how a photograph's stored pixels are turned for display.
ORIENTATION_TAG = 0x0112

#: The first bytes of a TIFF file (little- and big-endian).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")

#: EXIF orientation -> how to turn the stored pixels upright, and what that does.
_UPRIGHT: dict[int, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    2: (lambda a: cv2.flip(a, 1), "mirrored left to right"),
    3: (lambda a: cv2.rotate(a, cv2.ROTATE_180), "rotated by 180 degrees"),
    4: (lambda a: cv2.flip(a, 0), "mirrored top to bottom"),
    5: (cv2.transpose, "transposed (mirrored along its main diagonal)"),
    6: (lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE), "rotated 90 degrees clockwise"),
    7: (lambda a: cv2.flip(cv2.transpose(a), -1), "mirrored along its anti-diagonal"),
    8: (
        lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
        "rotated 90 degrees anticlockwise",
    ),
}


def max_image_pixels() -> int:
    """The largest image read, in pixels: ``$PAGMFR_MAX_IMAGE_PIXELS``, else 100 million."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"{MAX_PIXELS_VARIABLE}={text!r}: expected a positive whole number of pixels"
        )
    return int(text)


@contextmanager
def _any_size() -> Iterator[None]:
    """Pillow with its own decompression-bomb limit lifted, to read a header's size: the
    limit that applies is :func:`max_image_pixels`."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


class Header(NamedTuple):
    """What an encoded image's header says: its size (width, height; None where Pillow cannot
    parse it) and its EXIF orientation (1, stored upright, when it has none)."""

    size: tuple[int, int] | None
    orientation: int


def read_header(data: bytes) -> Header:
    """The size and the EXIF (or XMP) orientation of an encoded image, parsed once from its
    header: pixels are never decoded here (Pillow's own bomb limit is lifted for the parse;
    the limit that applies is :func:`max_image_pixels`)."""
    try:
        with _any_size(), Image.open(io.BytesIO(data)) as image:
            size = image.size
            # A PNG's EXIF chunk precedes its pixels; Pillow's PNG getexif would decode them all
            # to look for one after them.
            if image.format == "PNG" and "exif" not in image.info:
                return Header(size, 1)
            try:
                orientation = image.getexif().get(ORIENTATION_TAG, 1)
            except (OSError, SyntaxError, ValueError):
                orientation = 1  # unreadable EXIF: its pixels as stored
    except (OSError, SyntaxError, ValueError):
        return Header(None, 1)  # a file Pillow cannot parse: OpenCV decides
    return Header(size, orientation if orientation in _UPRIGHT else 1)


def _check_pixels(size: tuple[int, int] | None, path: Path) -> None:
    """Refuse an image larger than :func:`max_image_pixels` from its header's ``size`` (OpenCV
    would decode it, or stop at its own limit with an assertion that names no file)."""
    if size is None:
        return
    width, height = size
    limit = max_image_pixels()
    if width * height > limit:
        raise ImageReadError(
            path,
            f"{width} x {height} pixels ({width * height:,}) is more than the {limit:,} that "
            f"{MAX_PIXELS_VARIABLE} allows: resize the image, or raise the limit",
        )


def _decode(path: Path) -> tuple[np.ndarray, list[str]]:
    """The file's pixels as stored (bit depth, channels and alpha kept), turned upright as its
    EXIF orientation says, and a note when they were turned."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(path, f"cannot read file ({err.strerror or err})") from err
    header = read_header(data)
    _check_pixels(header.size, path)
    try:
        decoded = (
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
        )
    except cv2.error as err:  # OpenCV's own checks (its pixel limit, a corrupt header)
        raise ImageReadError(path, f"OpenCV cannot decode it ({err.err})") from err
    if decoded is None:
        raise ImageReadError(
            path,
            "not a readable image (empty, truncated or not an image file); "
            "replace it with a valid PNG",
        )
    orientation = header.orientation
    if orientation not in _UPRIGHT:
        return decoded, []
    if data[:4] in _TIFF_MAGIC:
        raise ImageReadError(
            path,
            f"TIFF with orientation tag {orientation}: OpenCV turns such files in some cases "
            "and not in others; save the image upright (e.g. as PNG) without the tag",
        )
    turn, described = _UPRIGHT[orientation]
    note = (
        f"EXIF orientation {orientation}: read {described}, as image viewers show it; an image "
        "and its mask must match as shown"
    )
    return np.ascontiguousarray(turn(decoded)), [note]


def _supported(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` if its pixels are 8- or 16-bit, the depths every reader here handles."""
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(path, f"unsupported pixel type {array.dtype}; expected 8- or 16-bit")
    return array


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    if _supported(array, path).dtype == np.uint16:  # 16-bit PNGs: 65535 -> 255, rounded
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return array


def inspect_rgb(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """An image as uint8 RGB (H, W, 3), upright (grey becomes 3 channels, alpha is dropped),
    and what is unusual about the file (each note says how it was read)."""
    path = Path(path)
    decoded, notes = _decode(path)
    image = _to_uint8(decoded, path)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB), notes
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB), notes
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), notes
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB), notes
    raise ImageReadError(path, f"{channels} channels; expected grey, RGB or RGBA")


def read_rgb(path: str | Path) -> np.ndarray:
    """An image as uint8 RGB (H, W, 3), read as :func:`inspect_rgb` says."""
    return inspect_rgb(path)[0]


@dataclass(frozen=True)
class MaskConvention:
    """How a dataset stores defects in its masks: a pixel is defective from ``threshold`` up,
    on the 8-bit scale (a 16-bit mask is scaled down first), or, with ``threshold`` None, when
    its value as stored is non-zero: scaling first would turn a 16-bit mask's class id 1 into
    0. Each layout reads its masks as its dataset defines them, so a 0/1 VisA mask and the
    same mask saved as 0/255 give the same pixels, and MVTec's JPEG noise never becomes a
    defect."""

    threshold: int | None
    #: What the check prints: the convention in words.
    description: str


#: MVTec AD (and 3D-AD, AD 2): 0 normal, 255 defective; defective from 128 up.
MVTEC_MASKS = MaskConvention(128, "0 normal, 255 defective (MVTec AD; read from 128 up)")
#: VisA and plain folders: 0 normal, any other value (1, 255 or a defect class id) defective.
NONZERO_MASKS = MaskConvention(None, "any non-zero value is defective (0/1, 0/255 or class ids)")
#: A mask pixel is defective from this value up in MVTec AD's convention.
MASK_THRESHOLD = MVTEC_MASKS.threshold
LOSSY_SUFFIXES = (".jpg", ".jpeg")


class MaskRead(NamedTuple):
    """A decoded mask: bool (H, W), notes on the file, and the grey values it holds as its
    convention reads them (which tell the check which convention the files follow)."""

    mask: np.ndarray
    notes: list[str]
    values: tuple[int, ...]


def read_mask_file(path: str | Path, convention: MaskConvention = MVTEC_MASKS) -> MaskRead:
    """A ground-truth mask as ``convention`` defines it, what is unusual about the file (each
    note says how it was read and what to fix) and its grey values.

    Masks are single-channel, turned upright like images. Colour masks are read explicitly:
    an opaque alpha channel is ignored, a transparent one composites the colour over black,
    and a pixel's value is its brightest colour channel; MVTec's convention then reads a
    pixel as defective from 128 up, so a background of 3 or JPEG noise is never a defect,
    and the non-zero convention reads the values as stored (a JPEG from half its brightest
    value up).
    """
    path = Path(path)
    decoded, notes = _decode(path)
    stored = _mask_grey(_supported(decoded, path), notes)
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    if convention.threshold is None:
        return _read_nonzero(stored, lossy, notes)
    raw = _to_uint8(stored, path)
    mask = raw >= convention.threshold
    if lossy:
        notes.append("lossy (JPEG) mask: compression noise blurs its edges; save masks as PNG")
    elif convention == MVTEC_MASKS:
        notes += _mvtec_mask_notes(raw, mask)
    return MaskRead(mask, notes, _values(raw))


def _mask_grey(decoded: np.ndarray, notes: list[str]) -> np.ndarray:
    """A mask's one channel at the file's own depth: its brightest colour channel, drawn over
    black where a transparent alpha channel says so."""
    if decoded.ndim == 2:
        return decoded
    colour = decoded[:, :, : 3 if decoded.shape[2] >= 3 else 1]
    if decoded.shape[2] in (2, 4):  # grey or BGR, plus alpha
        alpha, opaque = decoded[:, :, -1:], np.iinfo(decoded.dtype).max
        if alpha.min() < opaque:
            notes.append("mask has a transparent alpha channel: read as drawn over black")
            colour = (colour.astype(np.uint32) * alpha // opaque).astype(decoded.dtype)
    return colour.max(axis=2)


def _values(grey: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.flatnonzero(np.bincount(grey.ravel())))


def _read_nonzero(stored: np.ndarray, lossy: bool, notes: list[str]) -> MaskRead:
    """Any non-zero value as stored is a defect, except in a JPEG: its compression rings faint
    values (1 to 10) around every edge, which would all be defects, so a JPEG mask is read
    from half its brightest value up, and its note says so."""
    if not lossy:
        return MaskRead(stored > 0, notes, _values(stored))
    brightest = int(stored.max())
    threshold = max(1, (brightest + 1) // 2)
    notes.append(
        f"lossy (JPEG) mask: its compression adds faint non-zero values around every edge, so "
        f"it is read as defective from {threshold} up (half its brightest value, {brightest}), "
        "not from 1, and class ids below that read as normal; save masks as PNG"
    )
    return MaskRead(stored >= threshold, notes, _values(stored))


def _mvtec_mask_notes(raw: np.ndarray, mask: np.ndarray) -> list[str]:
    """Values between 0 and 255 in an MVTec mask: named, with how they were read."""
    between = int(np.count_nonzero((raw > 0) & (raw < 255)))
    if between and not mask.any():
        return [
            f"no pixel reaches {MASK_THRESHOLD} (the brightest is {int(raw.max())}), so the mask "
            "reads as empty; a 0/1 mask must be saved as 0/255"
        ]
    if between:
        return [
            f"mask is not binary: {between} pixel(s) between 0 and 255, read as defective "
            f"from {MASK_THRESHOLD} up; MVTec AD masks are 0 (normal) or 255 (defective)"
        ]
    return []


def inspect_mask(
    path: str | Path, convention: MaskConvention = MVTEC_MASKS
) -> tuple[np.ndarray, list[str]]:
    """A ground-truth mask, bool (H, W), and notes on its file (see :func:`read_mask_file`)."""
    return read_mask_file(path, convention)[:2]


def read_mask(path: str | Path, convention: MaskConvention = MVTEC_MASKS) -> np.ndarray:
    """A ground-truth mask as bool (H, W), read as :func:`read_mask_file` says."""
    return read_mask_file(path, convention).mask


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


def is_hidden(path: Path) -> bool:
    """Dot-files and dot-folders (macOS ``._000.png`` metadata, ``.DS_Store``,
    ``.ipynb_checkpoints``): never data."""
    return path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden ones skipped), sorted so every process sees
    the same order."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p) and p.is_file()
    )
