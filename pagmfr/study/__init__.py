"""Studies: Ray Tune runs the trials, Optuna schedules searches, MLflow records everything.

The names below load on first use (``pagmfr.study.run_ablation``...): importing a light part
such as ``pagmfr.study.presets`` loads neither Ray nor torch.
"""

from pagmfr.lazy import lazy_attributes

_LAZY = {
    "Cell": "pagmfr.study.cells",
    "StudyGrid": "pagmfr.study.cells",
    "cell_key": "pagmfr.study.cells",
    "SearchPlan": "pagmfr.study.search_plan",
    "TrialSpec": "pagmfr.study.spec",
    "StudyOptions": "pagmfr.study.options",
    "StudySummary": "pagmfr.study.options",
    "init_ray": "pagmfr.study.ray_cluster",
    "start_local_ray": "pagmfr.study.ray_cluster",
    "run_ablation": "pagmfr.study.ablation",
    "run_hpo": "pagmfr.study.search",
    "load_best_config": "pagmfr.study.search",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = sorted(_LAZY)
