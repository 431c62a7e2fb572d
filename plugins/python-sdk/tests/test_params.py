"""Schema derivation from a dataclass, and params validation/parsing."""

import json
import unittest
from dataclasses import dataclass, field
from typing import List, Literal, Optional

import _path  # noqa: F401
from stagecraft_sdk import InvalidInput
from stagecraft_sdk.params import SCHEMA_DIALECT, parse_params, parse_params_json, schema_of


@dataclass
class Inner:
    x: int = 0


@dataclass
class Params:
    """Options of a test stage."""

    name: str = field(metadata={"description": "Who", "minLength": 1})
    size: int = field(default=128, metadata={"minimum": 8, "maximum": 1024, "description": "Longer side"})
    gray: bool = False
    ratio: float = field(default=0.5, metadata={"exclusiveMinimum": 0})
    mode: Literal["fast", "good"] = "fast"
    label: Optional[str] = None
    tags: List[str] = field(default_factory=list, metadata={"maxItems": 3})
    counts: list[int] = field(default_factory=lambda: [1, 2])
    inner: Inner = field(default_factory=Inner)
    color: str = field(default="red", metadata={"enum": ["red", "green"]})


class SchemaTest(unittest.TestCase):
    def setUp(self):
        self.s = schema_of(Params)
        self.p = self.s["properties"]

    def test_top_level(self):
        s = self.s
        self.assertEqual(s["$schema"], SCHEMA_DIALECT)
        self.assertEqual(s["type"], "object")
        self.assertIs(s["additionalProperties"], False)
        self.assertEqual(s["required"], ["name"])
        self.assertEqual(s["description"], "Options of a test stage.")
        self.assertEqual(s["title"], "Params")
        json.dumps(s)  # serialisable as is

    def test_fields(self):
        p = self.p
        self.assertEqual(p["name"], {"type": "string", "description": "Who", "minLength": 1})
        self.assertEqual(p["size"], {"type": "integer", "minimum": 8, "maximum": 1024,
                                     "description": "Longer side", "default": 128})
        self.assertEqual(p["gray"], {"type": "boolean", "default": False})
        self.assertEqual(p["ratio"]["type"], "number")
        self.assertEqual(p["mode"], {"type": "string", "enum": ["fast", "good"], "default": "fast"})
        self.assertEqual(p["label"], {"type": ["string", "null"], "default": None})
        self.assertEqual(p["tags"], {"type": "array", "items": {"type": "string"}, "maxItems": 3, "default": []})
        self.assertEqual(p["counts"]["default"], [1, 2])
        self.assertEqual(p["inner"]["properties"]["x"], {"type": "integer", "default": 0})
        self.assertIs(p["inner"]["additionalProperties"], False)
        self.assertEqual(p["inner"]["default"], {"x": 0})
        self.assertEqual(p["color"]["enum"], ["red", "green"])

    def test_no_params(self):
        s = schema_of(None)
        self.assertEqual(s["properties"], {})
        self.assertIs(s["additionalProperties"], False)
        self.assertEqual(parse_params_json(None, "{}"), None)
        with self.assertRaisesRegex(InvalidInput, "unknown field 'a'"):
            parse_params_json(None, '{"a": 1}')

    def test_bad_declarations(self):
        @dataclass
        class BadType:
            x: set = field(default_factory=set)

        @dataclass
        class BadKeyword:
            x: int = field(default=1, metadata={"minimun": 0})

        @dataclass
        class BadDefault:
            x: int = field(default=1, metadata={"minimum": 5})

        with self.assertRaisesRegex(TypeError, "BadType.x: unsupported type"):
            schema_of(BadType)
        with self.assertRaisesRegex(TypeError, "unknown schema keyword 'minimun'"):
            schema_of(BadKeyword)
        with self.assertRaisesRegex(TypeError, "BadDefault.x: the default 1 does not fit .* below the minimum 5"):
            schema_of(BadDefault)
        with self.assertRaisesRegex(TypeError, "must be a @dataclass"):
            schema_of(dict)


class ParseTest(unittest.TestCase):
    def parse(self, text):
        return parse_params_json(Params, text)

    def bad(self, text, pattern):
        with self.assertRaises(InvalidInput) as cm:
            self.parse(text)
        self.assertRegex(str(cm.exception), pattern)

    def test_defaults_and_values(self):
        p = self.parse('{"name": "a"}')
        self.assertEqual((p.name, p.size, p.gray, p.mode, p.label, p.tags, p.inner), ("a", 128, False, "fast", None, [], Inner(0)))
        p = self.parse('{"name": "a", "size": 64.0, "ratio": 2, "label": "x", "tags": ["t"], "inner": {"x": 3}, "mode": "good"}')
        self.assertEqual(p.size, 64)
        self.assertIsInstance(p.size, int)
        self.assertIsInstance(p.ratio, float)
        self.assertEqual(p.inner, Inner(3))
        self.assertEqual((p.label, p.tags, p.mode), ("x", ["t"], "good"))

    def test_errors_name_the_field(self):
        self.bad('{}', r"^params: missing required field 'name'$")
        self.bad('{"name": "a", "sise": 3}', r"^params: unknown field 'sise' \(known: name, size,")
        self.bad('{"name": "a", "size": "big"}', r'^params\.size: expected integer, got string "big"$')
        self.bad('{"name": "a", "size": 2.5}', r"^params\.size: expected integer, got number 2.5$")
        self.bad('{"name": "a", "size": true}', r"^params\.size: expected integer, got boolean true$")
        self.bad('{"name": "a", "size": 4}', r"^params\.size: 4 is below the minimum 8$")
        self.bad('{"name": "a", "size": 2000}', r"^params\.size: 2000 is above the maximum 1024$")
        self.bad('{"name": "a", "gray": 1}', r"^params\.gray: expected boolean, got integer 1$")
        self.bad('{"name": "a", "ratio": 0}', r"^params\.ratio: 0 must be greater than 0$")
        self.bad('{"name": "a", "mode": "slow"}', r'^params\.mode: string "slow" is not one of \["fast", "good"\]$')
        self.bad('{"name": "a", "color": "blue"}', r'^params\.color: string "blue" is not one of')
        self.bad('{"name": ""}', r"^params\.name: shorter than 1 characters$")
        self.bad('{"name": "a", "tags": ["a", 3]}', r"^params\.tags\[1\]: expected string, got integer 3$")
        self.bad('{"name": "a", "tags": ["a", "b", "c", "d"]}', r"^params\.tags: more than 3 items$")
        self.bad('{"name": "a", "inner": {"y": 1}}', r"^params\.inner: unknown field 'y'")
        self.bad('{"name": "a", "label": 5}', r"^params\.label: expected string or null, got integer 5$")
        self.bad('[1]', r"^params: expected a JSON object, got array$")
        self.bad('{"name": ', r"^params: not valid JSON")

    def test_bool_is_not_an_enum_number(self):
        @dataclass
        class P:
            level: Literal[0, 1] = 0

        with self.assertRaisesRegex(InvalidInput, "expected integer, got boolean true"):
            parse_params(P, {"level": True})
        self.assertEqual(parse_params(P, {"level": 1}).level, 1)

    def test_postponed_annotations(self):
        from _future_params import P

        props = schema_of(P)["properties"]
        self.assertEqual(props["a"]["type"], ["integer", "null"])
        self.assertEqual(props["b"]["type"], "array")


if __name__ == "__main__":
    unittest.main()
