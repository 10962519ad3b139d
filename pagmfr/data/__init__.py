"""Datasets in the layouts pagmfr reads (MVTec AD, MVTec 3D-AD, MVTec AD 2, VisA, plain
folders), their checks, and the embedded synthetic dataset.

The names below load on first use (``pagmfr.data.MVTecAD``...): importing a light part such
as ``pagmfr.data.images`` loads neither torch nor the synthetic dataset's defect painters
(which import ``pagmfr.anomalies``, whose sources read images from here: a cycle, were this
file to import them).
"""

from pagmfr.lazy import lazy_attributes

_LAZY = {
    "CheckReport": "pagmfr.data.check",
    "check_dataset": "pagmfr.data.check",
    "require_clean_data": "pagmfr.data.check",
    "MVTec3DRGB": "pagmfr.data.dataset",
    "MVTecAD": "pagmfr.data.dataset",
    "image_to_tensor": "pagmfr.data.dataset",
    "ImageReadError": "pagmfr.data.images",
    "inspect_mask": "pagmfr.data.images",
    "read_mask": "pagmfr.data.images",
    "read_rgb": "pagmfr.data.images",
    "DatasetError": "pagmfr.data.layout",
    "Problem": "pagmfr.data.layout",
    "Sample": "pagmfr.data.layout",
    "SplitScan": "pagmfr.data.layout",
    "list_categories": "pagmfr.data.layout",
    "scan_split": "pagmfr.data.layout",
    "SYNTHETIC_CATEGORIES": "pagmfr.data.synthetic",
    "make_synthetic_dataset": "pagmfr.data.synthetic",
    "TEST_DEFECT_TYPES": "pagmfr.data.test_defects",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = sorted(_LAZY)
