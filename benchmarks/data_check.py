"""The data check's speed on MVTec AD-sized files, and what it saves training.

Writes one category of MVTec-sized PNGs (1024 px photographs with noise, so they compress as
photographs do; a mask per defective image), then times the check with one decoding thread
(the baseline: a plain loop over the files) and with the thread pool, and projects both onto
MVTec AD's 5,354 images. Then it checks at a training size and reads the category as training
does, counting the files training still had to decode (the check keeps them in the cache).

Run: ``python benchmarks/data_check.py [--images 200] [--size 1024]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_time  # noqa: E402

from pagmfr.data import MVTecAD, check_dataset  # noqa: E402
from pagmfr.data.cache import IMAGE_CACHE  # noqa: E402
from pagmfr.data.check import decoding_threads  # noqa: E402
from pagmfr.data.images import resize_rgb, write_png  # noqa: E402

MVTEC_AD_IMAGES = 5354  # train and test images of the 15 categories


def write_category(root: Path, images: int, size: int) -> Path:
    """``images`` PNGs split 3:1 into train/good and test/{good,crack}, with masks."""
    rng = np.random.default_rng(0)
    photo = resize_rgb(skdata.astronaut(), (size, size)).astype(np.int16)
    folder = root / "part"
    train = images * 3 // 4
    for i in range(images):
        noisy = np.clip(photo + rng.integers(-12, 13, photo.shape), 0, 255).astype(np.uint8)
        if i < train:
            write_png(folder / "train" / "good" / f"{i:03d}.png", noisy)
        elif i % 2:
            write_png(folder / "test" / "good" / f"{i:03d}.png", noisy)
        else:
            mask = np.zeros((size, size), bool)
            mask[size // 3 : size // 2, size // 4 : size // 2] = True
            write_png(folder / "test" / "crack" / f"{i:03d}.png", noisy)
            write_png(folder / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_category(root, args.images, args.size)
        files = sum(1 for _ in root.rglob("*.png"))
        print(f"{args.images} images ({files} files with masks) at {args.size} px")
        threads = decoding_threads()
        one, report = best_time(lambda: check_dataset(root, workers=1), repeats=2)
        pool, _ = best_time(lambda: check_dataset(root, workers=threads), repeats=2)
        assert report.ok, report.format()
        for name, seconds in (("1 thread (baseline)", one), (f"{threads} threads", pool)):
            rate = args.images / seconds
            print(
                f"  {name:<20} {seconds:6.2f} s  {rate:7.1f} images/s  "
                f"MVTec AD (5,354 images): {MVTEC_AD_IMAGES / rate:6.1f} s"
            )
        print(f"  speed-up: {one / pool:.2f}x on {os.cpu_count()} CPUs")

        IMAGE_CACHE.clear()
        check_dataset(root, image_size=256, workers=threads)
        misses = IMAGE_CACHE.misses
        for split in ("train", "test"):
            data = MVTecAD(root, "part", split, image_size=256)
            for index in range(len(data)):
                data.load_arrays(index)
        print(
            f"  after a check at 256 px, training decoded {IMAGE_CACHE.misses - misses} of "
            f"{args.images} images again"
        )


if __name__ == "__main__":
    main()
