"""Datasets in the layouts pagmfr reads (MVTec AD, MVTec 3D-AD, MVTec AD 2, VisA, plain
folders), their checks, and the embedded synthetic dataset."""

from pagmfr.data.check import CheckReport, check_dataset, require_clean_data
from pagmfr.data.dataset import MVTec3DRGB, MVTecAD, image_to_tensor
from pagmfr.data.images import ImageReadError, inspect_mask, read_mask, read_rgb
from pagmfr.data.layout import (
    DatasetError,
    Problem,
    Sample,
    SplitScan,
    list_categories,
    scan_split,
)
from pagmfr.data.synthetic import SYNTHETIC_CATEGORIES, make_synthetic_dataset
from pagmfr.data.test_defects import TEST_DEFECT_TYPES

__all__ = [
    "TEST_DEFECT_TYPES",
    "SYNTHETIC_CATEGORIES",
    "CheckReport",
    "DatasetError",
    "ImageReadError",
    "MVTec3DRGB",
    "MVTecAD",
    "Problem",
    "Sample",
    "SplitScan",
    "check_dataset",
    "image_to_tensor",
    "inspect_mask",
    "list_categories",
    "make_synthetic_dataset",
    "read_mask",
    "read_rgb",
    "require_clean_data",
    "scan_split",
]
