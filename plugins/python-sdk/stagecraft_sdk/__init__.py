"""stagecraft SDK for stages written in Python (componentize-py).

A stage is a function from `Input[Params]` to `Output`, exported with
`stage(...)` as the class componentize-py looks for:

    from dataclasses import dataclass, field
    from stagecraft_sdk import Input, Output, stage, log

    @dataclass
    class Params:
        amount: int = field(default=10, metadata={"description": "How much", "minimum": 0})

    def run(input: Input[Params]) -> Output:
        ...
        return Output().add("report.json", "application/json", {...}).meta("count", 1)

    Stage = stage(run, Params, name="brighten", version="0.1.0", description="...")

Modules: errors, params, artifacts, png (pure Python); _host (bindings),
http (wasi:http client, world `http-stage` only).
"""

import json

from . import _host
from .artifacts import Artifact, Input, Output, matches, stem
from .errors import Failed, InvalidInput, StageError, Unavailable, describe_exception
from .params import parse_params_json, schema_of

__all__ = [
    "stage", "Input", "Output", "Artifact", "StageError", "InvalidInput", "Unavailable", "Failed",
    "log", "progress", "stem", "matches", "schema_of",
]

__version__ = "0.1.0"


class log:
    """Logging into the host's tracing pipeline (no-ops outside a component)."""

    @staticmethod
    def trace(message: str) -> None:
        _host.log("trace", message)

    @staticmethod
    def debug(message: str) -> None:
        _host.log("debug", message)

    @staticmethod
    def info(message: str) -> None:
        _host.log("info", message)

    @staticmethod
    def warn(message: str) -> None:
        _host.log("warn", message)

    @staticmethod
    def error(message: str) -> None:
        _host.log("error", message)


def progress(fraction: float, message: str = "") -> None:
    """Reports progress (`fraction` in 0..1, clamped) to whoever watches the call."""
    _host.progress(fraction, message)


def _stage_error(e: StageError):
    t = _host.types
    variant = {"invalid-input": t.StageError_InvalidInput, "unavailable": t.StageError_Unavailable}.get(
        e.kind, t.StageError_Failed)
    return _host.Err(variant(e.message))


def stage(run, params=None, *, name: str, version: str, description: str = "",
          accepts=("*/*",), produces=(), deterministic: bool = True):
    """The `Stage` class componentize-py exports, around `run(Input) -> Output`.

    `params` is a @dataclass (or None for a stage without params); its JSON
    Schema is derived now, at import, so a bad declaration fails the build.
    `deterministic=False` tells the host the stage reads a clock or a random
    source, so its results are not reused.
    """
    schema = schema_of(params)
    _host.STAGE_NAME = name
    if not deterministic:
        schema["x-stagecraft-deterministic"] = False
    schema_json = json.dumps(schema)
    accepts, produces = list(accepts), list(produces)

    class Stage:
        def describe(self):
            return _host.types.StageInfo(name, version, description, schema_json, accepts, produces)

        def run(self, input):
            t = _host.types
            try:
                p = parse_params_json(params, input.params, schema)
                arts = [Artifact(a.name, a.media_type, a.data) for a in input.artifacts]
                out = run(Input(arts, p))
                if not isinstance(out, Output):
                    raise Failed("%s() returned %s, not an Output" % (getattr(run, "__name__", "run"), type(out).__name__))
                metadata = out.metadata_json()
                return t.StageOutput([t.Artifact(a.name, a.media_type, bytes(a.data)) for a in out.artifacts], metadata)
            except StageError as e:
                raise _stage_error(e) from None
            except BaseException as e:
                # Anything else would reach the host as "Python function threw
                # an unexpected exception": keep its type, message and line.
                raise _host.Err(t.StageError_Failed(describe_exception(e))) from None

    Stage.__qualname__ = Stage.__name__ = "Stage"
    return Stage
