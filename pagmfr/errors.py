"""The error boundary: what a user sees when a command or a study cell fails.

A failure to read a user's file or value is raised where it happens, phrased to name the file
or key and say what to do; here it becomes one line (a dataset: one line per problem), with the
traceback only under ``--debug``. A study cell's error leaves it only in a form that survives
the copies and pickles Ray makes of it, so MLflow and the report show the real cause.
"""

from __future__ import annotations

import copy
import pickle
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Bad input or a failed run: their messages are written for the user where they are raised.
INPUT_ERRORS = (ValueError, OSError, RuntimeError)
#: Exit codes: bad input or a failed run; an unexpected error (a bug: please report it).
EXIT_INPUT, EXIT_UNEXPECTED = 2, 1

#: A DataLoader worker's error comes back as the text of its traceback.
_LOADER_ERROR = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


def describe(err: BaseException) -> str:
    """The line a user sees for ``err``: its message for bad input, else its type too."""
    text = str(err).strip()
    if _LOADER_ERROR.match(text):  # the worker's own error is the traceback's last line
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    if isinstance(err, INPUT_ERRORS):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}"


def report_error(err: Exception, debug: bool = False, prog: str = "pagmfr") -> int:
    """Print the line for ``err`` on stderr (``debug``: its traceback first) and return the
    exit code: :data:`EXIT_INPUT` for bad input or a failed run, else :data:`EXIT_UNEXPECTED`."""
    if debug:
        traceback.print_exception(err)
    expected = isinstance(err, INPUT_ERRORS)
    hint = "" if expected or debug else " (unexpected: run again with --debug for details)"
    print(f"{prog}: error: {describe(err)}{hint}", file=sys.stderr)
    return EXIT_INPUT if expected else EXIT_UNEXPECTED


def run_command(action: Callable[[], int], debug: bool = False, prog: str = "pagmfr") -> int:
    """Run a command's ``action``: its exit code, or :func:`report_error`'s."""
    try:
        return action()
    except Exception as err:
        return report_error(err, debug, prog)


def travels(err: BaseException) -> bool:
    """Whether ``err`` and the errors it was raised from survive a copy and a pickle round
    trip, as Ray makes of a failed trial's error (an exception whose ``__init__`` needs other
    arguments than its ``args`` does not: Ray then reports a TypeError instead)."""
    seen: BaseException | None = err
    while seen is not None:
        try:
            copy.copy(seen)
            pickle.loads(pickle.dumps(seen))
        except Exception:
            return False
        seen = seen.__cause__
    return True


@contextmanager
def travelling_errors() -> Iterator[None]:
    """A study cell's error boundary: an error that would not survive Ray's copies leaves as a
    RuntimeError carrying its traceback and, on its last line, its type and message."""
    try:
        yield
    except Exception as err:
        if travels(err):
            raise
        raise RuntimeError("".join(traceback.format_exception(err)).rstrip()) from None
