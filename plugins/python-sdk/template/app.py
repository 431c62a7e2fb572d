"""{{name}}: a stagecraft stage in Python. Describes its inputs in one JSON report."""

import hashlib
from dataclasses import dataclass, field
from typing import Optional

from stagecraft_sdk import Input, Output, log, png, progress, stage


@dataclass
class Params:
    """Options of {{name}}."""

    # Fields without a default are required; metadata becomes JSON Schema.
    hash: bool = field(default=True, metadata={"description": "Include each input's SHA-256"})
    only: Optional[str] = field(default=None, metadata={"description": "Only inputs of this media type (image/* allowed)"})


def run(input: Input[Params]) -> Output:
    p = input.params
    arts = input.by_media_type(p.only) if p.only else input.artifacts
    items = []
    for i, a in enumerate(arts):
        item = {"name": a.name, "media_type": a.media_type, "bytes": len(a.data)}
        if p.hash:
            item["sha256"] = hashlib.sha256(a.data).hexdigest()
        if png.is_png(a.data):
            img = png.decode(a.data, a.name)  # a broken PNG: invalid-input naming it and why
            item["width"], item["height"], item["mode"] = img.width, img.height, img.mode
        items.append(item)
        progress((i + 1) / max(1, len(arts)), a.name)
    log.info("described %d inputs" % len(items))
    return (Output()
            .add("inputs.json", "application/json", items)
            .meta("count", len(items))
            .meta("bytes", sum(it["bytes"] for it in items)))


Stage = stage(run, Params, name="{{name}}", version="0.1.0",
              description="Describes its inputs (name, type, size, PNG dimensions)",
              accepts=["*/*"], produces=["application/json"])
