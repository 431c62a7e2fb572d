"""Typed params: a `@dataclass` -> JSON Schema (draft 2020-12) and back.

Declare params as a dataclass; fields without a default are required, and
`field(metadata={...})` adds schema keywords (`description`, `minimum`,
`maximum`, `enum`, `pattern`, `minLength`, ...). Supported field types:
bool, int, float, str, `Optional[T]`, `list[T]`, `dict[str, T]`,
`Literal[...]`, and nested dataclasses. Pure Python (no bindings).
"""

import dataclasses
import json
import math
import re
import types
import typing
from typing import Any, Literal, Union

from .errors import InvalidInput

__all__ = ["schema_of", "parse_params", "parse_params_json"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Keywords an author may put in `field(metadata=...)`, copied into the schema.
_SCHEMA_KEYWORDS = {
    "description", "title", "examples", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "enum", "const", "pattern", "minLength", "maxLength", "minItems", "maxItems",
    "uniqueItems", "format", "deprecated",
}

_UNION_TYPES = (Union, getattr(types, "UnionType", Union))


def _hints(cls) -> dict:
    # Resolves string annotations (`from __future__ import annotations`).
    return typing.get_type_hints(cls)


def _split_optional(tp):
    """(inner type, True) for Optional[inner], else (tp, False)."""
    if typing.get_origin(tp) in _UNION_TYPES:
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) != len(args):
            inner = rest[0] if len(rest) == 1 else Union[tuple(rest)]
            return inner, True
    return tp, False


def _type_schema(tp, where: str) -> dict:
    """The JSON Schema of one Python type annotation."""
    inner, optional = _split_optional(tp)
    if optional:
        schema = _type_schema(inner, where)
        if set(schema) == {"type"} and isinstance(schema["type"], str):
            return {"type": [schema["type"], "null"]}
        if "enum" in schema:
            schema = dict(schema, enum=list(schema["enum"]) + [None])
            if isinstance(schema.get("type"), str):
                schema["type"] = [schema["type"], "null"]
            return schema
        return {"anyOf": [schema, {"type": "null"}]}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if tp is Any:
        return {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        values = list(args)
        schema = {"enum": values}
        kinds = {_json_type_name(v) for v in values}
        if len(kinds) == 1:
            schema = {"type": kinds.pop(), "enum": values}
        return schema
    if origin in (list, typing.List) or tp is list:
        if not args:
            return {"type": "array"}
        return {"type": "array", "items": _type_schema(args[0], where + "[]")}
    if origin in (dict, typing.Dict) or tp is dict:
        if args and args[0] is not str:
            raise TypeError("params field %s: dict keys must be str (JSON object keys)" % where)
        schema = {"type": "object"}
        if args:
            schema["additionalProperties"] = _type_schema(args[1], where + "{}")
        return schema
    if origin in _UNION_TYPES:
        return {"anyOf": [_type_schema(a, where) for a in args]}
    if dataclasses.is_dataclass(tp):
        return _object_schema(tp)
    raise TypeError("params field %s: unsupported type %r (use bool, int, float, str, Optional, list, dict, Literal or a dataclass)" % (where, tp))


def _json_type_name(v) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if v is None:
        return "null"
    raise TypeError("Literal value %r is not a JSON scalar" % (v,))


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return True, f.default
    if f.default_factory is not dataclasses.MISSING:
        return True, f.default_factory()
    return False, None


def _object_schema(cls) -> dict:
    hints = _hints(cls)
    properties, required = {}, []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        where = "%s.%s" % (cls.__name__, f.name)
        schema = _type_schema(hints[f.name], where)
        for key, value in f.metadata.items():
            if key not in _SCHEMA_KEYWORDS:
                raise TypeError("params field %s: unknown schema keyword %r in metadata (known: %s)"
                                % (where, key, ", ".join(sorted(_SCHEMA_KEYWORDS))))
            schema[key] = value
        has_default, default = _default_of(f)
        if has_default:
            if dataclasses.is_dataclass(default):
                default = dataclasses.asdict(default)
            try:
                json.dumps(default, allow_nan=False)
            except (TypeError, ValueError):
                raise TypeError("params field %s: default %r is not JSON" % (where, default)) from None
            # The default must itself be valid, or every call without the field fails.
            try:
                _check(default, schema, f.name)
            except InvalidInput as e:
                raise TypeError("params field %s: the default %r does not fit its own type and limits: %s"
                                % (where, default, e)) from None
            schema["default"] = default
        else:
            required.append(f.name)
        properties[f.name] = schema
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    doc = (cls.__doc__ or "").strip()
    # dataclass invents a docstring "Params(a: int = 1)" when there is none.
    if doc and not doc.startswith(cls.__name__ + "("):
        schema["description"] = doc
    return schema


def schema_of(cls) -> dict:
    """The JSON Schema (draft 2020-12) of a params dataclass (or `None`: no params)."""
    if cls is None:
        return {"$schema": SCHEMA_DIALECT, "type": "object", "properties": {}, "additionalProperties": False}
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError("params must be a @dataclass class, got %r" % (cls,))
    schema = {"$schema": SCHEMA_DIALECT, "title": cls.__name__}
    schema.update(_object_schema(cls))
    return schema


# --- validation ----------------------------------------------------------

def _got(value) -> str:
    kind = _json_type_name(value) if value is None or isinstance(value, (bool, int, float, str)) else (
        "array" if isinstance(value, list) else "object" if isinstance(value, dict) else type(value).__name__)
    text = json.dumps(value) if not isinstance(value, (list, dict)) else kind
    if len(text) > 40:
        text = text[:37] + "..."
    return kind if text == kind else "%s %s" % (kind, text)


def _type_ok(value, t: str) -> bool:
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        # 3.0 is an integer in JSON Schema; Python's json gives a float for it.
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, dict)
    return False


def _check(value, schema: dict, path: str) -> None:
    """Raises InvalidInput naming `path` where `value` breaks `schema`."""
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                _check(value, option, path)
                return
            except InvalidInput as e:
                errors.append(str(e))
        raise InvalidInput(errors[0] if len(errors) == 1 else "params.%s: %s matches none of the allowed types (%s)"
                           % (path, _got(value), "; ".join(errors)))
    t = schema.get("type")
    if t is not None:
        allowed = t if isinstance(t, list) else [t]
        if not any(_type_ok(value, x) for x in allowed):
            raise InvalidInput("params.%s: expected %s, got %s" % (path, " or ".join(allowed), _got(value)))
    if "enum" in schema and not _in_enum(value, schema["enum"]):
        raise InvalidInput("params.%s: %s is not one of %s" % (path, _got(value), json.dumps(schema["enum"])))
    if "const" in schema and value != schema["const"]:
        raise InvalidInput("params.%s: must be %s" % (path, json.dumps(schema["const"])))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput("params.%s: %s is not a finite number" % (path, value))
        if "minimum" in schema and value < schema["minimum"]:
            raise InvalidInput("params.%s: %s is below the minimum %s" % (path, _num(value), schema["minimum"]))
        if "maximum" in schema and value > schema["maximum"]:
            raise InvalidInput("params.%s: %s is above the maximum %s" % (path, _num(value), schema["maximum"]))
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise InvalidInput("params.%s: %s must be greater than %s" % (path, _num(value), schema["exclusiveMinimum"]))
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            raise InvalidInput("params.%s: %s must be less than %s" % (path, _num(value), schema["exclusiveMaximum"]))
        if "multipleOf" in schema and (value / schema["multipleOf"]) % 1 != 0:
            raise InvalidInput("params.%s: %s is not a multiple of %s" % (path, _num(value), schema["multipleOf"]))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise InvalidInput("params.%s: shorter than %d characters" % (path, schema["minLength"]))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise InvalidInput("params.%s: longer than %d characters" % (path, schema["maxLength"]))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise InvalidInput("params.%s: %s does not match the pattern %s" % (path, _got(value), schema["pattern"]))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise InvalidInput("params.%s: fewer than %d items" % (path, schema["minItems"]))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise InvalidInput("params.%s: more than %d items" % (path, schema["maxItems"]))
        if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            raise InvalidInput("params.%s: items must be unique" % path)
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], "%s[%d]" % (path, i))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key in schema.get("required", []):
            if key not in value:
                raise InvalidInput("params.%s: missing required field '%s'" % (path, key))
        for key, item in value.items():
            if key in props:
                _check(item, props[key], "%s.%s" % (path, key))
            elif extra is False:
                raise InvalidInput("params.%s: unknown field '%s' (known: %s)" % (path, key, ", ".join(props) or "none"))
            elif isinstance(extra, dict):
                _check(item, extra, "%s.%s" % (path, key))


def _in_enum(value, values) -> bool:
    # Python has True == 1: a JSON boolean only matches a boolean, and back.
    return any(v == value and isinstance(v, bool) == isinstance(value, bool) for v in values)


def _num(v):
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _build(cls, data: dict):
    """Builds the dataclass from validated JSON: nested dataclasses, int coercion."""
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.init and f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name])
    return cls(**kwargs)


def _convert(value, tp):
    inner, optional = _split_optional(tp)
    if value is None:
        return None
    tp = inner
    if tp is int and isinstance(value, float):
        return int(value)
    if tp is float and isinstance(value, int):
        return float(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, typing.List) and args:
        return [_convert(v, args[0]) for v in value]
    if origin in (dict, typing.Dict) and args:
        return {k: _convert(v, args[1]) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _build(tp, value)
    return value


def parse_params(cls, data: Any, schema: dict = None):
    """Validates decoded JSON against the dataclass's schema and builds it.

    Raises `InvalidInput` naming the field: unknown field, wrong type,
    out of range, missing required field.
    """
    schema = schema if schema is not None else schema_of(cls)
    if not isinstance(data, dict):
        raise InvalidInput("params: expected a JSON object, got %s" % _got(data))
    # Paths read `params.amount`, so check the fields of the top object here.
    props = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in data:
            raise InvalidInput("params: missing required field '%s'" % key)
    for key, value in data.items():
        if key not in props:
            raise InvalidInput("params: unknown field '%s' (known: %s)" % (key, ", ".join(props) or "none"))
        _check(value, props[key], key)
    return _build(cls, data) if cls is not None else None


def parse_params_json(cls, text: str, schema: dict = None):
    """`parse_params` from the JSON text the host passes (empty means `{}`)."""
    try:
        data = json.loads(text) if text and text.strip() else {}
    except ValueError as e:
        raise InvalidInput("params: not valid JSON: %s" % e) from None
    return parse_params(cls, data, schema)
