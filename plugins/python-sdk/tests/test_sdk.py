"""Errors (the exception's type, message and line), artifacts, and the http module off the component."""

import unittest

import _path  # noqa: F401
from stagecraft_sdk import Failed, Input, InvalidInput, Output, Unavailable, http, stage
from stagecraft_sdk.artifacts import Artifact, matches, stem
from stagecraft_sdk.errors import describe_exception


def author_code():
    return int("abc")


class ErrorsTest(unittest.TestCase):
    def test_describe_names_type_message_and_author_line(self):
        try:
            author_code()
        except ValueError as e:
            text = describe_exception(e)
        self.assertRegex(text, r"^ValueError: invalid literal for int\(\) with base 10: 'abc' \(at test_sdk\.py:\d+ in author_code\)$")

    def test_library_frames_are_skipped(self):
        import json
        try:
            json.loads("{")
        except ValueError as e:
            text = describe_exception(e)
        self.assertRegex(text, r"^JSONDecodeError: .* \(at test_sdk\.py:\d+ in test_library_frames_are_skipped\)$")

    def test_kinds(self):
        self.assertEqual([c("m").kind for c in (InvalidInput, Unavailable, Failed)], ["invalid-input", "unavailable", "failed"])
        self.assertTrue(issubclass(http.HttpUnavailable, Unavailable))
        self.assertTrue(issubclass(http.HttpFailed, Failed))


class ArtifactsTest(unittest.TestCase):
    def test_input_helpers(self):
        inp = Input([Artifact("a.png", "image/png", b"1"), Artifact("b.txt", "text/plain; charset=utf-8", b"hi")], None)
        self.assertEqual([a.name for a in inp.by_media_type("image/*")], ["a.png"])
        self.assertEqual(inp.one("text/plain").text(), "hi")
        self.assertEqual(inp.get("b.txt").name, "b.txt")
        with self.assertRaisesRegex(InvalidInput, "expected one application/json input artifact, got 0"):
            inp.one("application/json")
        with self.assertRaisesRegex(InvalidInput, "at least one input artifact"):
            Input([], None).first()
        self.assertTrue(matches("IMAGE/PNG", "image/*"))
        self.assertEqual(stem("dir/photo.final.png"), "photo.final")

    def test_output(self):
        out = Output().add("r.json", "application/json", {"a": 1}).add("t.txt", "text/plain", "é").meta("n", 2)
        self.assertEqual(out.artifacts[0].data, b'{\n  "a": 1\n}')
        self.assertEqual(out.artifacts[1].data, "é".encode())
        self.assertEqual(out.metadata_json(), '{"n": 2}')
        with self.assertRaisesRegex(ValueError, "two output artifacts named 'r.json'"):
            out.add("r.json", "application/json", {})
        with self.assertRaisesRegex(TypeError, "not JSON-serialisable"):
            Output().meta("x", object()).metadata_json()
        with self.assertRaisesRegex(InvalidInput, "artifact 'x' is not JSON"):
            Artifact("x", "application/json", b"{").json()

    def test_http_needs_the_http_world(self):
        self.assertFalse(http.AVAILABLE)
        with self.assertRaisesRegex(Failed, "world 'stage'.*http-stage"):
            http.get("http://127.0.0.1/")

    def test_stage_class(self):
        Stage = stage(lambda inp: Output(), None, name="t", version="1.0.0")
        self.assertEqual(Stage.__name__, "Stage")
        self.assertTrue(callable(Stage().run) and callable(Stage().describe))


if __name__ == "__main__":
    unittest.main()
