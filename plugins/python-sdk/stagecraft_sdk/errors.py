"""Stage errors, mapped one to one onto the WIT `stage-error` variant.

Pure Python (no bindings), so it is importable by plain-CPython tests.
"""

import json
import os
import re
import traceback

__all__ = ["StageError", "InvalidInput", "Unavailable", "Failed", "describe_exception"]


class StageError(Exception):
    """A stage failure the host understands. Raise one of the subclasses."""

    kind = "failed"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = str(message)

    def __str__(self) -> str:
        return self.message


class InvalidInput(StageError):
    """The caller's fault (bad params, undecodable input): never retried."""

    kind = "invalid-input"


class Unavailable(StageError):
    """Transient trouble (a busy service): the scheduler retries with backoff."""

    kind = "unavailable"


class Failed(StageError):
    """The stage's own failure: reported, retried only if configured."""

    kind = "failed"


# Frames in these folders are not the author's code: the location we report
# is the deepest frame outside them (where the author's call went wrong).
# componentize-py splits the standard library (`/python/json/...` beside
# `/python/lib/python3.14/os.py`): take the folders holding a few of its
# modules and packages, and the SDK's own folder.
def _library_dirs():
    dirs = {os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(os.__file__))}
    for package in (json, re):  # a package: its parent folder holds the stdlib
        dirs.add(os.path.dirname(os.path.dirname(os.path.abspath(package.__file__))))
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs)


_LIBRARY_DIRS = _library_dirs()


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen ...>, <string>
        return True
    return os.path.abspath(filename).startswith(_LIBRARY_DIRS)


def describe_exception(exc: BaseException) -> str:
    """`ValueError: bad thing (at app.py:12 in run)` for an unexpected exception.

    Without this the host sees only "Python function threw an unexpected
    exception": the type, message and the author's line must travel in the
    `failed` message.
    """
    message = str(exc)
    text = type(exc).__name__ + (": " + message if message else "")
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        own = [f for f in frames if not _is_library(f.filename)]
        frame = (own or frames)[-1]
        text += " (at %s:%s in %s)" % (os.path.basename(frame.filename), frame.lineno, frame.name)
    return text
