"""Studies: Ray Tune runs the trials, Optuna schedules searches, MLflow records everything."""

from pagmfr.study.cells import Cell, SearchPlan, ablation_cells, cell_key
from pagmfr.study.runner import (
    StudyOptions,
    StudySummary,
    init_ray,
    load_best_config,
    run_ablation,
    run_hpo,
    start_local_ray,
)

__all__ = [
    "Cell",
    "SearchPlan",
    "StudyOptions",
    "StudySummary",
    "ablation_cells",
    "cell_key",
    "init_ray",
    "load_best_config",
    "run_ablation",
    "run_hpo",
    "start_local_ray",
]
