"""Datasets in the MVTec AD layout, their checks, and the embedded synthetic dataset."""

from pagmfr.data.check import CheckReport, check_dataset
from pagmfr.data.dataset import MVTec3DRGB, MVTecAD, image_to_tensor
from pagmfr.data.images import ImageReadError, read_mask, read_rgb
from pagmfr.data.layout import DatasetError, Problem, Sample, list_categories, scan_split
from pagmfr.data.synthetic import DEFECT_TYPES, SYNTHETIC_CATEGORIES, make_synthetic_dataset

__all__ = [
    "DEFECT_TYPES",
    "SYNTHETIC_CATEGORIES",
    "CheckReport",
    "DatasetError",
    "ImageReadError",
    "MVTec3DRGB",
    "MVTecAD",
    "Problem",
    "Sample",
    "check_dataset",
    "image_to_tensor",
    "list_categories",
    "make_synthetic_dataset",
    "read_mask",
    "read_rgb",
    "scan_split",
]
