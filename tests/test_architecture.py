"""ARCHITECTURE.md stays true: every path and name it mentions exists, and it names every package.

The document follows one convention so that it can be checked:

- a module or folder is a backticked repository-relative path (`pagmfr/study/cells.py`,
  `pagmfr/models/`): any backticked token with a ``/``, or one ending in a file suffix listed in
  :data:`PATH_SUFFIXES`, must exist (a token with a space or ``://`` is not a path). A token
  with a placeholder (``<name>``, ``*``) is a pattern: only its folders before the first
  placeholder must exist. So a name with a ``/`` that is no path (an MLflow metric such as
  "loss/part") is written in quotes, not backticks;
- a Python name is a backticked dotted name that starts with ``pagmfr.``
  (`pagmfr.models.base.AnomalyMethod`): it must resolve;
- a config key is a backticked dotted name whose first part is a section of the config
  (`train.seed`): it must be one of ``Config().to_flat()``'s keys, which hold every shared and
  every registered method's key. Other dotted names (MLflow tags such as ``test.resolution``,
  file names such as ``metrics.json``) have no section as their first part and are not checked.

Names resolve without importing what they name where the source can tell: the module is the
longest prefix that is a ``.py`` file or package folder under ``pagmfr``'s own folder (found
with ``importlib.util.find_spec("pagmfr")``), and the attribute is looked up in that module's
syntax tree. So a name in a module that imports Ray or MLflow costs no Ray or MLflow. Only
names the tree does not bind (a package's lazy ``__getattr__``, an inherited method) are
imported and looked up with ``getattr``. Fenced code blocks (the data flow diagram) are free
text and not checked.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from pagmfr.config import Config

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "ARCHITECTURE.md"
#: Folders outside the package that the code map must name besides every package.
TOP_FOLDERS = ("studies", "benchmarks", "cluster", "tests")
#: What "Where to add" must have a heading for.
ADDITIONS = ("backbone", "metric", "dataset layout", "method")
PATH_SUFFIXES = (".py", ".md", ".yaml", ".sh", ".toml")
PLACEHOLDERS = ("<", "*", "{")

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_BACKTICKED = re.compile(r"`([^`\n]+)`")
_PYTHON_NAME = re.compile(r"pagmfr(\.[A-Za-z_][A-Za-z0-9_]*)+")
_DOTTED = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")


def backticked(text: str) -> list[str]:
    """Every backticked token outside fenced code blocks, in order, without repeats."""
    return list(dict.fromkeys(_BACKTICKED.findall(_FENCE.sub("", text))))


def is_path(token: str) -> bool:
    """Whether ``token`` is meant as a repository path (see the module docstring)."""
    return (
        " " not in token and "://" not in token and ("/" in token or token.endswith(PATH_SUFFIXES))
    )


def missing_paths(tokens: list[str], root: Path = ROOT) -> list[str]:
    """The path tokens that name nothing under ``root``; a pattern's fixed folders only."""
    missing = []
    for token in filter(is_path, tokens):
        fixed = token
        if any(mark in token for mark in PLACEHOLDERS):
            fixed = re.split(r"[<*{]", token, maxsplit=1)[0].rpartition("/")[0]
            if not fixed:
                continue
        if not (root / fixed).exists():
            missing.append(token)
    return missing


def _module_of(name: str) -> tuple[str, Path | None, list[str]]:
    """The longest module that ``name`` starts with, its source file, and the attribute path
    after it. Found on disk from the top package's folder: ``find_spec`` would import every
    candidate's parent, and a module such as ``pagmfr.study.cli`` imports Ray."""
    parts = name.split(".")
    spec = importlib.util.find_spec(parts[0])
    source = Path(spec.origin) if spec and spec.origin else None
    folder = source.parent if source and source.name == "__init__.py" else None
    module = parts[0]
    for index, part in enumerate(parts[1:], start=1):
        if folder is not None and (folder / part / "__init__.py").is_file():
            folder, source = folder / part, folder / part / "__init__.py"
        elif folder is not None and (folder / f"{part}.py").is_file():
            folder, source = None, folder / f"{part}.py"
        else:
            return module, source, parts[index:]
        module = f"{module}.{part}"
    return module, source, []


def _bound_names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """The names a module or class body binds: definitions, assignments and imports, also
    inside its top-level ``if`` and ``try`` blocks."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names[leaf.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = node
        elif isinstance(node, (ast.If, ast.Try)):
            inner = node.body + node.orelse + getattr(node, "finalbody", [])
            for handler in getattr(node, "handlers", []):
                inner += handler.body
            names.update(_bound_names(inner))
    return names


def _statically_bound(source: Path | None, attributes: list[str]) -> bool:
    """Whether the module's source binds ``attributes`` (a class's own members included)."""
    if source is None:
        return False
    body: list[ast.stmt] = ast.parse(source.read_text()).body
    for attribute in attributes:
        node = _bound_names(body).get(attribute)
        if node is None:
            return False
        body = node.body if isinstance(node, ast.ClassDef) else []
    return True


def resolves(name: str) -> bool:
    """Whether the dotted ``name`` is a module or an attribute path of one."""
    module, source, attributes = _module_of(name)
    if source is None:
        return False
    if not attributes or _statically_bound(source, attributes):
        return True
    try:
        value = importlib.import_module(module)
        for attribute in attributes:
            value = getattr(value, attribute)
    except (ImportError, AttributeError):
        return False
    return True


def unresolved_names(tokens: list[str]) -> list[str]:
    """The ``pagmfr.`` names among ``tokens`` that do not resolve."""
    return [t for t in tokens if _PYTHON_NAME.fullmatch(t) and not resolves(t)]


def unknown_config_keys(tokens: list[str], flat_keys: set[str]) -> list[str]:
    """Dotted tokens whose first part is a config section but that are not config keys."""
    sections = {key.split(".")[0] for key in flat_keys if "." in key}
    return [
        token
        for token in tokens
        if _DOTTED.fullmatch(token)
        and not is_path(token)
        and token.split(".")[0] in sections
        and token not in flat_keys
    ]


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every Markdown heading outside fenced code blocks."""
    return [
        (len(match.group(1)), match.group(2).strip())
        for match in re.finditer(r"^(#+)\s+(.*)$", _FENCE.sub("", text), re.MULTILINE)
    ]


def packages(root: Path = ROOT) -> list[str]:
    """Every package folder under ``pagmfr/`` (the root included), as ``pagmfr/data/``."""
    return sorted(
        init.parent.relative_to(root).as_posix() + "/"
        for init in (root / "pagmfr").rglob("__init__.py")
    )


@pytest.fixture(scope="module")
def document() -> str:
    return DOCUMENT.read_text()


@pytest.fixture(scope="module")
def tokens(document: str) -> list[str]:
    return backticked(document)


def test_every_path_the_document_names_exists(tokens):
    assert [t for t in tokens if is_path(t)], "no backticked path found: is the convention kept?"
    missing = missing_paths(tokens)
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"


def test_every_pagmfr_name_the_document_names_resolves(tokens):
    assert [t for t in tokens if _PYTHON_NAME.fullmatch(t)], "no backticked pagmfr. name found"
    unresolved = unresolved_names(tokens)
    assert not unresolved, f"ARCHITECTURE.md names what the code does not have: {unresolved}"


def test_every_config_key_the_document_names_is_a_key(tokens):
    unknown = unknown_config_keys(tokens, set(Config().to_flat()))
    assert not unknown, f"ARCHITECTURE.md names config keys that do not exist: {unknown}"


def test_every_package_and_top_folder_is_named(tokens):
    named = {token.rstrip("/") for token in tokens if is_path(token)}
    expected = packages() + [f"{folder}/" for folder in TOP_FOLDERS]
    left_out = [path for path in expected if path.rstrip("/") not in named]
    assert not left_out, f"ARCHITECTURE.md's code map leaves out: {left_out}"


def test_where_to_add_covers_a_backbone_a_metric_a_layout_and_a_method(document):
    found = headings(document)
    starts = [i for i, (_, title) in enumerate(found) if title.lower() == "where to add"]
    assert starts, "ARCHITECTURE.md has no 'Where to add' section"
    level = found[starts[0]][0]
    section = []
    for depth, title in found[starts[0] + 1 :]:
        if depth <= level:
            break
        section.append(title.lower())
    lacking = [a for a in ADDITIONS if not any(a in title for title in section)]
    assert not lacking, f"'Where to add' has no heading for: {lacking}"


def test_the_checks_catch_a_wrong_path_name_key_and_package(tmp_path):
    """The checks above would pass on an empty list: each must find a planted mistake."""
    text = (
        "`pagmfr/no_such_module.py` `pagmfr/models/<name>.py` `no_such_folder/<x>.py` "
        "`pagmfr.models.base.AnomalyMethod` `pagmfr.models.base.NoSuchThing` "
        "`pagmfr.no_such_module.name` `pagmfr.models.base.AnomalyMethod.no_such_hook` "
        "`pagmfr.Config` `train.seed` `train.no_such_key` `test.resolution`\n"
        "```\n`pagmfr.ignored.in_a_fence`\n```\n"
    )
    found = backticked(text)
    assert "pagmfr.ignored.in_a_fence" not in found
    assert missing_paths(found) == ["pagmfr/no_such_module.py", "no_such_folder/<x>.py"]
    assert unresolved_names(found) == [
        "pagmfr.models.base.NoSuchThing",
        "pagmfr.no_such_module.name",
        "pagmfr.models.base.AnomalyMethod.no_such_hook",
    ]
    assert unknown_config_keys(found, set(Config().to_flat())) == ["train.no_such_key"]
    (tmp_path / "pagmfr" / "extra").mkdir(parents=True)
    (tmp_path / "pagmfr" / "__init__.py").touch()
    (tmp_path / "pagmfr" / "extra" / "__init__.py").touch()
    assert packages(tmp_path) == ["pagmfr/", "pagmfr/extra/"]
