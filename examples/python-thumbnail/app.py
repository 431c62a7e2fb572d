"""thumbnail_py: PNG thumbnails in pure Python (the SDK's png module, a box filter)."""

from dataclasses import dataclass, field

from stagecraft_sdk import Input, Output, png, progress, stage


@dataclass
class Params:
    """Thumbnail options."""

    max_side: int = field(default=128, metadata={
        "description": "Length of the longer side of the thumbnail, in pixels", "minimum": 8, "maximum": 1024})
    grayscale: bool = field(default=False, metadata={"description": "Convert to gray (BT.601 luma)"})


def run(input: Input[Params]) -> Output:
    p = input.params
    input.first()
    out = Output()
    sizes = []
    for i, a in enumerate(input.artifacts):
        img = png.decode(a.data, a.name)  # InvalidInput naming the input and why
        scale = p.max_side / max(img.width, img.height)
        if scale < 1:  # never upscale: a small input stays as it is
            w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
            img = img.resize_box(w, h)
        if p.grayscale:
            img = img.convert("LA" if img.mode in ("LA", "RGBA") else "L")
        out.add("%s_thumb.png" % a.stem, "image/png", png.encode(img))
        sizes.append({"name": a.name, "width": img.width, "height": img.height})
        progress((i + 1) / len(input.artifacts), a.name)
    return out.meta("count", len(sizes)).meta("thumbnails", sizes)


Stage = stage(run, Params, name="thumbnail_py", version="0.1.0",
              description="PNG thumbnails (longer side max_side, optional grayscale), in Python",
              accepts=["image/png"], produces=["image/png"])
