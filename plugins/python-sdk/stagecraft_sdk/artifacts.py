"""Artifacts in and out of a stage, and the helpers to find and build them.

Pure Python (no bindings): the host's records are converted at the edge.
"""

import fnmatch
import json
import os
from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, List, Optional, TypeVar

from .errors import InvalidInput

__all__ = ["Artifact", "Input", "Output", "stem", "matches"]

P = TypeVar("P")


@dataclass
class Artifact:
    """One named blob: `name` is file-like (`photo.png`), `media_type` IANA."""

    name: str
    media_type: str
    data: bytes

    @property
    def stem(self) -> str:
        return stem(self.name)

    def text(self, encoding: str = "utf-8") -> str:
        """The data as text; `InvalidInput` naming the artifact if it does not decode."""
        try:
            return bytes(self.data).decode(encoding)
        except UnicodeDecodeError as e:
            raise InvalidInput("artifact '%s' is not %s text: %s" % (self.name, encoding, e)) from None

    def json(self) -> Any:
        """The data parsed as JSON; `InvalidInput` naming the artifact if it is not."""
        try:
            return json.loads(self.text())
        except ValueError as e:
            raise InvalidInput("artifact '%s' is not JSON: %s" % (self.name, e)) from None


def stem(name: str) -> str:
    """`photo` for `dir/photo.png`: the base of an output name."""
    return os.path.splitext(os.path.basename(name))[0]


def matches(media_type: str, pattern: str) -> bool:
    """Media-type match with `image/*` style wildcards, case-insensitive,
    ignoring parameters (`text/plain; charset=utf-8`)."""
    base = media_type.split(";", 1)[0].strip().lower()
    return fnmatch.fnmatchcase(base, pattern.strip().lower())


@dataclass
class Input(Generic[P]):
    """What `run` receives: the input artifacts and the parsed params."""

    artifacts: List[Artifact]
    params: P

    def first(self) -> Artifact:
        """The first artifact, or `InvalidInput` when there is none."""
        if not self.artifacts:
            raise InvalidInput("this stage needs at least one input artifact")
        return self.artifacts[0]

    def by_media_type(self, pattern: str) -> List[Artifact]:
        """The artifacts whose media type matches `pattern` (`image/*` allowed)."""
        return [a for a in self.artifacts if matches(a.media_type, pattern)]

    def one(self, pattern: str) -> Artifact:
        """The one artifact matching `pattern`; `InvalidInput` for none or several."""
        found = self.by_media_type(pattern)
        if len(found) != 1:
            raise InvalidInput("expected one %s input artifact, got %d" % (pattern, len(found)))
        return found[0]

    def get(self, name: str) -> Optional[Artifact]:
        """The artifact called `name`, if any."""
        return next((a for a in self.artifacts if a.name == name), None)


@dataclass
class Output:
    """What `run` returns: artifacts plus a JSON metadata object (a dict)."""

    artifacts: List[Artifact] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def add(self, name: str, media_type: str, data: Any) -> "Output":
        """Adds an artifact. `data` is bytes, str (UTF-8) or, for a JSON media
        type, any JSON-serialisable value."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            if "json" not in media_type:
                raise TypeError("artifact '%s': data must be bytes or str for %s" % (name, media_type))
            data = json.dumps(data, indent=2).encode("utf-8")
        if any(a.name == name for a in self.artifacts):
            raise ValueError("two output artifacts named '%s'" % name)
        self.artifacts.append(Artifact(name, media_type, bytes(data)))
        return self

    def extend(self, artifacts: Iterable[Artifact]) -> "Output":
        for a in artifacts:
            self.add(a.name, a.media_type, a.data)
        return self

    def meta(self, key: str, value: Any) -> "Output":
        """Sets one metadata field."""
        self.metadata[key] = value
        return self

    def metadata_json(self) -> str:
        """The metadata serialised for the host; a clear error if it is not JSON."""
        try:
            return json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError("output metadata is not JSON-serialisable: %s" % e) from None
