"""Which of pagmfr's modules a method's results depend on, and their fingerprint.

A study cell is keyed by the code that trains it, so an edit elsewhere (the report, the CLI,
the study driver) retrains nothing, while an edit to what the method imports retrains its cells
and no other method's. The scope is worked out from the import graph of pagmfr's source, so a
new module is in it as soon as training imports it:

- roots: the method's own module, the engine (fit, evaluate) and the study trainable that runs a
  cell (the selected checkpoint is tested there);
- edges: every ``import`` in a module, at the top or inside a function, with names imported
  from a package resolved to the submodule that defines them (``from pagmfr.models import
  build_model`` depends on ``models/build.py``, not on every method the package re-exports),
  whether the package imports them or loads them on first use (its ``_LAZY`` table);
- not followed: the registry's registration of the built-in methods (registering a method is
  not training it), and the study driver's modules beyond the trainable itself.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
from functools import cache
from pathlib import Path

from pagmfr.logs import log
from pagmfr.registry import method_spec

#: The package's source folder.
PACKAGE_DIR = Path(__file__).resolve().parent
#: The roots every method shares: the training loop, evaluation, and a study cell's trainable.
SHARED_ROOTS = ("pagmfr.engine", "pagmfr.study.trainable")
#: The name of a package ``__init__``'s table of names it loads on first use (``pagmfr.data``).
LAZY_TABLE = "_LAZY"
#: (importer prefix, imported prefix): edges that are not training code.
NOT_FOLLOWED = (
    ("pagmfr.registry", "pagmfr.models"),  # the built-ins' registration
    ("pagmfr.study", "pagmfr.study"),  # the trainable's ties to the driver's modules
)


def _module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules(package_dir: Path) -> dict[str, Path]:
    return {_module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}


def _exports(init: Path) -> dict[str, str]:
    """A package ``__init__``'s re-exports: name -> the module it comes from, whether imported
    there or loaded on first use from its ``_LAZY`` table (name -> module), which keeps a light
    import of the package light while training still depends on what the names load."""
    exports = {}
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            exports.update({alias.asname or alias.name: node.module for alias in node.names})
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == LAZY_TABLE for target in node.targets
        ):
            exports.update(ast.literal_eval(node.value))
    return exports


def _imports(name: str, modules: dict[str, Path]) -> set[str]:
    """The pagmfr modules that module ``name`` imports (see the module docstring)."""
    found = set()
    for node in ast.walk(ast.parse(modules[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif node.module in modules and modules[node.module].name == "__init__.py":
                    found.add(_exports(modules[node.module]).get(alias.name, node.module))
                else:
                    found.add(node.module)
    return {
        module
        for module in found
        if module in modules
        and not any(
            name.startswith(importer) and module.startswith(imported)
            for importer, imported in NOT_FOLLOWED
        )
    }


def training_modules(roots: tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Every pagmfr module that ``roots`` reach through the import graph, sorted."""
    modules = _modules(package_dir)
    reached, todo = set(), [r for r in roots if r in modules]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(_imports(name, modules) - reached)
    return sorted(reached)


def scope_fingerprint(
    roots: tuple[str, ...], extra_source: bytes = b"", package_dir: Path = PACKAGE_DIR
) -> str:
    """A hash of the names and bytes of every module ``roots`` reach (plus ``extra_source``:
    a method defined outside pagmfr)."""
    modules = _modules(package_dir)
    digest = hashlib.sha256()
    for name in training_modules(roots, package_dir):
        digest.update(name.encode() + b"\0" + modules[name].read_bytes() + b"\0")
    digest.update(extra_source)
    return digest.hexdigest()[:16]


def pagmfr_imports(source: str) -> tuple[str, ...]:
    """The pagmfr modules a method file outside pagmfr imports: further roots of its scope."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("pagmfr"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pagmfr"):
            names.add(node.module)
    return tuple(sorted(names))


@cache
def method_code_fingerprint(method: str) -> str:
    """The code a method's cells depend on (:mod:`pagmfr.code_scope`): the pagmfr modules its
    training and evaluation import and, for a method registered outside pagmfr, the whole
    source file that defines it (a user's method lives in their script or module) and the
    pagmfr modules that file imports."""
    spec = method_spec(method)
    module = getattr(spec.origin, "__module__", "")
    if spec.builtin:
        return scope_fingerprint((module, *SHARED_ROOTS))
    try:
        source = Path(inspect.getsourcefile(spec.origin) or "").read_bytes()
    except (TypeError, OSError):
        log(
            f"warning: the source of method {method!r} cannot be read (defined interactively?): "
            "its cells are keyed by pagmfr's code only, so a change to it is not detected"
        )
        source = b""
    roots = (*SHARED_ROOTS, *pagmfr_imports(source.decode(errors="replace")))
    return scope_fingerprint(roots, b"\0" + source)
