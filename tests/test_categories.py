import json

import pytest

from pagmfr.categories import (
    KINDS_FILE,
    MVTEC_AD_CATEGORIES,
    OBJECT_CATEGORIES,
    TEXTURE_CATEGORIES,
    category_kind,
)


def test_the_fifteen_mvtec_categories_and_their_kinds():
    assert len(MVTEC_AD_CATEGORIES) == 15
    assert set(TEXTURE_CATEGORIES) == {"carpet", "grid", "leather", "tile", "wood"}
    assert len(OBJECT_CATEGORIES) == 10
    assert category_kind("wood") == "texture"
    assert category_kind("metal_nut") == "object"


def test_custom_categories_default_to_object_and_take_the_users_kind(tmp_path):
    assert category_kind("my_fabric") == "object"
    assert category_kind("my_fabric", overrides={"my_fabric": "texture"}) == "texture"
    (tmp_path / KINDS_FILE).write_text(json.dumps({"my_fabric": "texture"}))
    assert category_kind("my_fabric", root=tmp_path) == "texture"


def test_bad_kinds_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown category kind 'fabric'"):
        category_kind("x", overrides={"x": "fabric"})
    (tmp_path / KINDS_FILE).write_text(json.dumps({"my_part": "shiny"}))
    with pytest.raises(ValueError, match=r"pagmfr_categories.json: category 'my_part'"):
        category_kind("my_part", root=tmp_path)
