"""One driver per study at a time: a second one waits for the first, then finds its cells
finished instead of training every cell again beside it.

The lock is an OS file lock (``flock``) on ``<cells>/<study>/driver.lock``: the OS releases it
when its holder ends, however it ends, so a killed driver never leaves a study locked. The
file says who holds it, for the line a waiting driver prints.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from pagmfr.logs import log
from pagmfr.study.options import StudyOptions

#: How often a waiting driver tries the lock, and how often it says it is still waiting.
POLL_SECONDS = 1.0
REPEAT_SECONDS = 60.0


def lock_path(options: StudyOptions) -> Path:
    """The study's lock file, in its cells folder (always a local or mounted folder)."""
    return Path(options.cells()) / options.name / "driver.lock"


def _try_lock(file: TextIO) -> bool:
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it (empty while it is being written)."""
    try:
        return path.read_text().strip() or "another driver"
    except OSError:
        return "another driver"


def _wait(file: TextIO, path: Path, poll: float, repeat: float) -> None:
    """Block until ``file`` is locked, saying every ``repeat`` seconds who holds it."""
    said = -float("inf")
    while not _try_lock(file):
        if time.monotonic() - said >= repeat:
            log(
                f"waiting for {_holder(path)}, which is running this study ({path}): this "
                "driver goes on when that one ends"
            )
            said = time.monotonic()
        time.sleep(poll)


@contextmanager
def hold_lock(
    path: Path, poll: float = POLL_SECONDS, repeat: float = REPEAT_SECONDS
) -> Iterator[None]:
    """Hold the lock file ``path``, waiting while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as file:  # not truncated: the holder's line stays readable
        _wait(file, path, poll, repeat)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        file.seek(0)
        file.truncate()
        file.write(f"driver pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        file.flush()
        try:
            yield
        finally:
            file.truncate(0)  # released: no stale holder for the next waiter to name
            fcntl.flock(file, fcntl.LOCK_UN)


@contextmanager
def driver_lock(options: StudyOptions) -> Iterator[None]:
    """This study's driver lock, held while the study runs (see the module's docstring)."""
    if "://" in options.storage_path and not options.cells_path:
        log(
            f"note: study {options.name}: the driver lock is in {options.cells()} on this "
            "machine only; a driver on another machine is not held off (pass --cells-path on a "
            "shared filesystem)"
        )
    with hold_lock(lock_path(options)):
        yield
