"""Paper-ready ablation tables from a study's MLflow runs (or stand-alone training folders).

``load`` reads the runs, ``select`` decides which run stands for which cell, ``tables`` and
``components`` compute every value and test once, ``protocol`` states how the runs measured
them, ``ranks`` ranks the variants over every block for ``cd_diagram`` to draw, and ``latex``,
``markdown``, ``tidy`` (CSV) and ``page`` (HTML) write them, each escaping what it prints;
``build`` runs them in that order.
"""

from pagmfr.lazy import lazy_attributes

#: The names below load on first use: ``import pagmfr.report`` (or one of its writers) loads
#: neither pandas nor SciPy until a report is built.
_LAZY = {
    "DEFAULT_METRICS": "pagmfr.report.build",
    "FORMATS": "pagmfr.report.build",
    "Report": "pagmfr.report.build",
    "build_report": "pagmfr.report.build",
    "report_folders": "pagmfr.report.build",
    "report_study": "pagmfr.report.build",
    "tex_file_names": "pagmfr.report.build",
}

__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = sorted(_LAZY)
