"""The house rules a maintainer relies on: every method owns its settings, the config knows no
method, the light modules stay light, the study package is in parts."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pagmfr.config import Config
from pagmfr.models import (
    PAGMFR,
    RGPKD,
    PAGMFRSettings,
    PatchCore,
    PatchCoreSettings,
    ResNetFeatures,
    RGPKDSettings,
)
from pagmfr.registry import available_methods, register_model
from pagmfr.scoring import ScoringSettings
from pagmfr.settings import setting
from pagmfr.study.cells import cell_key

PACKAGE = Path(__file__).resolve().parents[1] / "pagmfr"


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def _loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after ``statement``."""
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_config_knows_no_method():
    source = (PACKAGE / "config.py").read_text()
    assert not [m for m in _imports(PACKAGE / "config.py") if m.startswith("pagmfr.models")]
    for method in available_methods():
        assert f'"{method}"' not in source, method
    loaded = _loaded_after("import pagmfr.config")
    assert not {m for m in loaded if m.startswith("pagmfr.models")}


def test_leaf_helpers_import_nothing_from_pagmfr():
    for leaf in ("settings.py", "scoring.py"):
        assert [m for m in _imports(PACKAGE / leaf) if m.startswith("pagmfr")] in (
            [],
            ["pagmfr.settings"],
        ), leaf


def test_method_files_import_the_config_for_annotations_only():
    for name in ("pagmfr.py", "rgpkd.py", "patchcore.py"):
        tree = ast.parse((PACKAGE / "models" / name).read_text())
        top_level = [
            node.module
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module == "pagmfr.config"
        ]
        assert not top_level, name


def test_presets_load_neither_ray_nor_torch():
    loaded = _loaded_after("import pagmfr.study.presets")
    assert not {"ray", "torch", "mlflow"} & loaded


def test_the_study_package_is_in_parts_on_public_ray_api():
    for path in sorted((PACKAGE / "study").glob("*.py")):
        assert len(path.read_text().splitlines()) <= 300, path.name
    for path in PACKAGE.rglob("*.py"):
        assert not [m for m in _imports(path) if m.startswith("ray._private")], path


def test_every_builtin_method_is_built_without_a_config():
    scoring = ScoringSettings(smoothing_sigma=1.0)
    images = __import__("torch").rand(2, 3, 64, 64)
    pagmfr = PAGMFR(
        ResNetFeatures("resnet18", (1, 2, 3)),
        PAGMFRSettings(),
        scoring,
        image_size=64,
        pseudo_anomalies=False,
    )
    pagmfr.prepare([images])
    rgpkd = RGPKD(ResNetFeatures("resnet18", (1, 2, 3)), RGPKDSettings(), scoring, image_size=64)
    rgpkd.prepare([images])
    patchcore = PatchCore(ResNetFeatures("resnet18", (2, 3)), PatchCoreSettings(), 1.0)
    patchcore.prepare([images])
    for model in (pagmfr, rgpkd, patchcore):
        model.eval()
        anomaly_map, score = model.predict(images)
        assert anomaly_map.shape == (2, 1, 64, 64) and score.shape == (2,)


def test_a_cell_is_keyed_on_its_own_method_settings_only():
    """A PAGMFR-only key (at any value, its default changed or not) leaves the other methods'
    cells alone; a key PAGMFR and RGPKD share moves both; PatchCore reads neither."""

    def key(method, **overrides):
        config = Config().with_overrides({"method": method, **overrides})
        return cell_key(config, "data", "code")

    for method in ("rgpkd", "patchcore"):
        assert key(method) == key(method, **{"loss.focal": 7.0, "fusion.mode": "add"})
        assert key(method) == key(method, **{"anomaly.knn": False, "mfrm.skips": "deepest"})
    assert key("pagmfr") != key("pagmfr", **{"loss.focal": 7.0})
    assert key("rgpkd") != key("rgpkd", **{"loss.image_mse": 0.5})
    assert key("patchcore") == key("patchcore", **{"loss.image_mse": 0.5})
    assert key("patchcore") != key("patchcore", **{"anomaly.smoothing_sigma": 2.0})


def test_a_key_keeps_its_name_when_its_owner_changes():
    config = Config().with_overrides({"fusion.mode": "add", "anomaly.knn": False})
    assert config.pagmfr.fusion.mode == "add" and not config.pagmfr.anomaly.knn
    flat = config.to_flat()
    assert flat["fusion.mode"] == "add" and flat["loss.image_mse"] == 1.0
    shared = Config().with_overrides({"loss.image_mse": 0.25})
    assert shared.pagmfr.loss.image_mse == shared.rgpkd.image_mse == 0.25
    with pytest.raises(ValueError, match="anomaly.knn_layers must be among backbone.layers"):
        Config().with_overrides({"backbone.layers": "1,2", "anomaly.knn_layers": "2,3"})
    # PAGMFR's rule is PAGMFR's: another method with the same keys is not refused by it
    Config().with_overrides(
        {"method": "rgpkd", "backbone.layers": "1,2", "anomaly.knn_layers": "2,3"}
    )


def test_methods_that_disagree_on_a_shared_key_are_refused():
    from dataclasses import dataclass

    @dataclass
    class Heavier:
        image_mse: float = setting(2.0, key="loss.image_mse")

    with pytest.raises(ValueError, match=r"declares loss.image_mse as .* = 2.0, but 'pagmfr'"):
        register_model("heavier", PatchCore, settings=Heavier)
    assert "heavier" not in available_methods()

    @dataclass
    class Sneaky:
        smoothing_sigma: float = setting(4.0, key="anomaly.smoothing_sigma")

    register_model("sneaky", PatchCore, settings=Sneaky)
    try:
        assert Config.from_flat({}).method == "pagmfr"  # every other method keeps working
        with pytest.raises(ValueError, match="declares anomaly.smoothing_sigma, a key every"):
            Config.from_flat({"method": "sneaky"})
    finally:
        register_model("sneaky", PatchCore, replace=True)  # without settings: harmless

    @dataclass
    class Conflicting:
        image_mse: float = setting(3.0, key="loss.image_mse")

    with pytest.raises(ValueError, match="declares loss.image_mse"):  # a replacement refused
        register_model("rgpkd", RGPKD, settings=Conflicting, replace=True)
    assert "rgpkd" in available_methods() and Config().with_overrides({"method": "rgpkd"})
