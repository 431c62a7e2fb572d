"""The generated `wit_world` bindings, found once for both worlds.

componentize-py names the stage types module `types` in world `stage` and
`stagecraft_stage_types` in `http-stage` (wasi:http has a `types` too).
Outside a component (plain-CPython unit tests) there are no bindings:
`types` is None and logging/progress do nothing, like the Rust SDK off wasm32.
"""

try:
    from wit_world.imports import log as _log
    from wit_world.imports import progress as _progress
except ImportError:  # plain CPython: no host
    _log = _progress = None

try:
    from wit_world.imports import stagecraft_stage_types as types
except ImportError:
    try:
        from wit_world.imports import types
    except ImportError:
        types = None

try:
    from componentize_py_types import Err
except ImportError:
    Err = None

IN_COMPONENT = types is not None
# Set by `stage(...)`: error messages name the stage (e.g. the grant to ask for).
STAGE_NAME = "STAGE"


def log(level: str, message: str) -> None:
    if _log is not None:
        _log.log(getattr(_log.Level, level.upper()), str(message))


def progress(fraction: float, message: str) -> None:
    if _progress is not None:
        f = float(fraction)
        # NaN compares false both ways: report it as 0 rather than trap.
        _progress.report(min(1.0, max(0.0, f)) if f == f else 0.0, str(message))
