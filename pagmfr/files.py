"""Files: atomic writes (a process killed mid-write, a lost node or a killed driver, leaves the
previous file intact, never a truncated one that every later reader trips over), safe reads
of users' tensor files, and user strings that become file names."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: What a plain name must not be or contain: it becomes one path component.
_NOT_PLAIN = ("", ".", "..")
PLAIN_NAME = "a plain name (not empty, '.' or '..', no '/', '\\' or control characters)"


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(partial_path)``, then rename the partial file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomically(path, lambda partial: partial.write_text(text))


def copy_atomically(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` onto ``target`` atomically (e.g. a checkpoint from another folder)."""
    return write_atomically(target, lambda partial: shutil.copy2(source, partial))


def require_output_folder(path: str | Path) -> Path:
    """``path`` as a folder to write into, checked before any work: a file there, or in place
    of one of its parent folders, would otherwise end the work at its first write with a bare
    "[Errno 17] File exists". The folder itself is created by whoever writes into it."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.is_dir():
            return path
        if folder.exists():
            problem = "is a file" if folder == path else f"cannot be made: {folder} is a file"
            raise NotADirectoryError(
                f"output folder {path} {problem}, not a folder; choose another --out (a new "
                "or an existing folder)"
            )
    return path


@contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """A fresh folder beside ``target`` (same file system: its files move in by rename) to
    write a set of files into before :func:`publish_files`; removed on leaving, whatever
    happened, so an interrupted or failed write leaves ``target`` as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_files(staging: Path, target: Path, manifest: str) -> list[Path]:
    """Move every file of ``staging`` into ``target`` by rename and list them in ``target /
    manifest``. The files the previous manifest lists and this set lacks are removed first;
    a file no manifest lists (a user's own, in a shared folder) is never touched. Returns the
    files' paths in ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    names = sorted(path.name for path in staging.iterdir())
    listed = target / manifest
    try:
        previous = json.loads(listed.read_text())["files"] if listed.is_file() else []
    except (OSError, ValueError, KeyError, TypeError):
        previous = []  # unreadable: remove nothing
    for name in previous:
        if isinstance(name, str) and is_plain_name(name) and name not in names:
            (target / name).unlink(missing_ok=True)
    for name in names:
        os.replace(staging / name, target / name)
    write_text_atomically(listed, json.dumps({"files": names}, indent=1))
    return [target / name for name in names]


def is_plain_name(name: object) -> bool:
    """Whether ``name`` is one path component that stays in its folder: study names and
    categories become folder and file names, so ``../x`` or ``/x`` must never reach a path."""
    return (
        isinstance(name, str)
        and name not in _NOT_PLAIN
        and not any(c in "/\\" or ord(c) < 32 for c in name)
    )


def require_plain_name(name: str, what: str) -> str:
    """``name``, or a ValueError naming ``what`` it is and what a plain name is."""
    if not is_plain_name(name):
        raise ValueError(f"{what} {name!r} must be {PLAIN_NAME}: it becomes a folder name")
    return name


def load_tensor_file(path: Path, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` of a user's file, with every way it can fail
    (empty, truncated, not a PyTorch file, holding code) named with the path and ``fix``.

    Safe loading stays on: a file holding anything but tensors and plain data is refused, never
    run."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err):  # the safe unpickler refused a class or function by name
            reason = (
                "it holds Python objects besides tensors and plain data, which pagmfr never "
                "loads (they could run code)"
            )
        else:
            reason = "not a PyTorch file"
    except EOFError:
        reason = "the file is empty or truncated"
    except Exception as err:  # torch's zip reader and unpickler: truncated or not torch.save'd
        reason = "truncated or not a PyTorch file"
        if isinstance(err, RuntimeError):  # the zip reader's own words: "failed finding ..."
            reason += f" ({str(err).split('. ')[0]})"
    raise ValueError(f"{path}: cannot load this {what}: {reason}; {fix}")
