"""PNG decode/encode in pure Python (zlib is in the WASI build of CPython).

Decodes non-interlaced PNGs of 8 bits per sample (and 1/2/4-bit gray and
palette) in every colour type: gray, gray+alpha, RGB, RGBA, palette (with
tRNS alpha), all five filter types. Encodes gray, gray+alpha, RGB, RGBA.
16-bit samples and Adam7 interlacing are refused with a clear `PngError`
(an `InvalidInput`: the caller sent an image this stage cannot read).

Pixels are a flat `bytes` row-major buffer, `channels` bytes per pixel.
Rows are unfiltered with big-integer lane arithmetic where a filter allows
it (None, Up): a per-byte Python loop is ~50x slower.
"""

import struct
import zlib
from itertools import accumulate
from dataclasses import dataclass

from .errors import InvalidInput

__all__ = ["Image", "PngError", "decode", "encode", "is_png", "MODES"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# mode -> channels; colour type -> mode of the decoded image.
MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_COLOR_TYPES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ENCODE_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}
# Guards a decompression bomb: 64 Mpx is far beyond what a stage handles.
MAX_PIXELS = 64 * 1024 * 1024


class PngError(InvalidInput):
    """The bytes are not a PNG this module can decode."""


@dataclass
class Image:
    width: int
    height: int
    mode: str  # "L", "LA", "RGB" or "RGBA"
    data: bytes

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError("unknown image mode %r (one of %s)" % (self.mode, ", ".join(MODES)))
        if self.width <= 0 or self.height <= 0:
            raise ValueError("image size must be positive, got %dx%d" % (self.width, self.height))
        expected = self.width * self.height * MODES[self.mode]
        if len(self.data) != expected:
            raise ValueError("%dx%d %s image needs %d bytes, got %d"
                             % (self.width, self.height, self.mode, expected, len(self.data)))

    @property
    def channels(self) -> int:
        return MODES[self.mode]

    def pixel(self, x: int, y: int) -> tuple:
        c = self.channels
        i = (y * self.width + x) * c
        return tuple(self.data[i:i + c])

    def convert(self, mode: str) -> "Image":
        """This image in another mode. Gray is ITU-R BT.601 luma; added alpha is opaque."""
        if mode == self.mode:
            return self
        if mode not in MODES:
            raise ValueError("unknown image mode %r" % mode)
        src, n = self.data, self.width * self.height
        has_alpha = self.mode in ("LA", "RGBA")
        c = self.channels
        if self.mode in ("L", "LA"):
            gray = src[0::c]
            r = g = b = gray
        else:
            r, g, b = src[0::c], src[1::c], src[2::c]
        alpha = src[c - 1::c] if has_alpha else b"\xff" * n
        out = bytearray(n * MODES[mode])
        if mode in ("L", "LA"):
            if self.mode in ("L", "LA"):
                lum = gray
            else:
                lum = bytes((299 * rr + 587 * gg + 114 * bb + 500) // 1000 for rr, gg, bb in zip(r, g, b))
            k = MODES[mode]
            out[0::k] = lum
            if mode == "LA":
                out[1::k] = alpha
        else:
            k = MODES[mode]
            out[0::k], out[1::k], out[2::k] = r, g, b
            if mode == "RGBA":
                out[3::k] = alpha
        return Image(self.width, self.height, mode, bytes(out))

    def resize_box(self, width: int, height: int) -> "Image":
        """Downscale by averaging each output pixel's box of input pixels
        (area averaging; upscaling repeats pixels). The sums run in C
        (zip/sum over a band of rows, prefix sums per channel): a Python
        loop per input pixel would be ~10x slower."""
        if width <= 0 or height <= 0:
            raise ValueError("target size must be positive, got %dx%d" % (width, height))
        c, w, h, src = self.channels, self.width, self.height, self.data
        xs = [(i * w // width, max(i * w // width + 1, (i + 1) * w // width)) for i in range(width)]
        stride = w * c
        out = bytearray()
        for j in range(height):
            y0 = j * h // height
            y1 = max(y0 + 1, (j + 1) * h // height)
            n_rows = y1 - y0
            band = [src[y * stride:(y + 1) * stride] for y in range(y0, y1)]
            col = list(map(sum, zip(*band))) if n_rows > 1 else band[0]
            line = bytearray(width * c)
            for ch in range(c):
                acc = [0]
                acc += accumulate(col[ch::c])
                line[ch::c] = bytes([(acc[x1] - acc[x0] + (x1 - x0) * n_rows // 2) // ((x1 - x0) * n_rows)
                                     for x0, x1 in xs])
            out += line
        return Image(width, height, self.mode, bytes(out))


def is_png(data: bytes) -> bool:
    return bytes(data[:8]) == SIGNATURE


# --- lane arithmetic: bytes as one big integer, 8-bit lanes, no carries ---

def _masks(n: int):
    return int.from_bytes(b"\x80" * n, "big"), int.from_bytes(b"\x7f" * n, "big")


def add_bytes(a: bytes, b: bytes) -> bytes:
    """(a[i] + b[i]) & 255 for every i."""
    n = len(a)
    hi, lo = _masks(n)
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    return (((x & lo) + (y & lo)) ^ ((x ^ y) & hi)).to_bytes(n, "big")


def sub_bytes(a: bytes, b: bytes) -> bytes:
    """(a[i] - b[i]) & 255 for every i."""
    n = len(a)
    hi, lo = _masks(n)
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    return (((x | hi) - (y & lo)) ^ ((x ^ y ^ (hi | lo)) & hi)).to_bytes(n, "big")


def _unfilter(ftype: int, line: bytearray, prev: bytes, bpp: int, row: int) -> bytearray:
    n = len(line)
    if ftype == 0:
        return line
    if ftype == 1:  # Sub
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 255
        return line
    if ftype == 2:  # Up
        return bytearray(add_bytes(line, prev))
    if ftype == 3:  # Average
        for i in range(bpp):
            line[i] = (line[i] + (prev[i] >> 1)) & 255
        for i in range(bpp, n):
            line[i] = (line[i] + ((line[i - bpp] + prev[i]) >> 1)) & 255
        return line
    if ftype == 4:  # Paeth
        for i in range(bpp):
            line[i] = (line[i] + prev[i]) & 255
        for i in range(bpp, n):
            a, b, c = line[i - bpp], prev[i], prev[i - bpp]
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            if pa <= pb and pa <= pc:
                pred = a
            elif pb <= pc:
                pred = b
            else:
                pred = c
            line[i] = (line[i] + pred) & 255
        return line
    raise PngError("corrupt PNG: unknown filter type %d on row %d" % (ftype, row))


def _unpack_bits(row: bytes, depth: int, width: int) -> bytes:
    """1/2/4-bit samples -> one byte each (still raw sample values)."""
    per = 8 // depth
    mask = (1 << depth) - 1
    out = bytearray(len(row) * per)
    for k in range(per):
        shift = 8 - depth * (k + 1)
        out[k::per] = bytes((v >> shift) & mask for v in row)
    return bytes(out[:width])


def decode(data: bytes, name: str = None) -> Image:
    """Decodes a PNG; `PngError` (InvalidInput) with the reason otherwise,
    naming the input when `name` is given (`input 'a.png': not a PNG ...`)."""
    try:
        return _decode(bytes(data))
    except PngError as e:
        if name is None:
            raise
        raise PngError("input '%s': %s" % (name, e)) from None


def _decode(data: bytes) -> Image:
    if not is_png(data):
        raise PngError("not a PNG (the signature is missing)")
    pos, ihdr, palette, trns, idat = 8, None, None, None, []
    while True:
        if pos + 8 > len(data):
            raise PngError("truncated PNG: no IEND chunk")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise PngError("truncated PNG: chunk %r is cut short" % ctype.decode("latin-1"))
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if zlib.crc32(ctype + body) != crc:
            raise PngError("corrupt PNG: bad CRC in chunk %r" % ctype.decode("latin-1"))
        pos += 12 + length
        if ctype == b"IHDR":
            if length != 13:
                raise PngError("corrupt PNG: IHDR of %d bytes" % length)
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"PLTE":
            palette = body
        elif ctype == b"tRNS":
            trns = body
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if ihdr is None:
        raise PngError("corrupt PNG: no IHDR chunk")
    width, height, depth, ctype, compression, filter_method, interlace = ihdr
    if ctype not in _COLOR_TYPES:
        raise PngError("corrupt PNG: unknown colour type %d" % ctype)
    if depth == 16:
        raise PngError("16-bit PNGs are not supported (8 bits per sample only); convert it to 8-bit")
    if depth != 8 and not (ctype in (0, 3) and depth in (1, 2, 4)):
        raise PngError("unsupported PNG bit depth %d for colour type %d" % (depth, ctype))
    if interlace:
        raise PngError("interlaced (Adam7) PNGs are not supported; save it non-interlaced")
    if compression != 0 or filter_method != 0:
        raise PngError("corrupt PNG: unknown compression or filter method")
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise PngError("unsupported PNG size %dx%d (at most %d pixels)" % (width, height, MAX_PIXELS))
    if ctype == 3 and palette is None:
        raise PngError("corrupt PNG: palette image without a PLTE chunk")
    channels = _CHANNELS[ctype]
    bpp = max(1, channels * depth // 8)  # filter unit: bytes per complete pixel
    row_bytes = (width * channels * depth + 7) // 8
    try:
        d = zlib.decompressobj()
        raw = d.decompress(b"".join(idat), (row_bytes + 1) * height + 1)
    except zlib.error as e:
        raise PngError("corrupt PNG: image data does not inflate: %s" % e) from None
    if len(raw) < (row_bytes + 1) * height:
        raise PngError("truncated PNG: image data holds %d of %d bytes" % (len(raw), (row_bytes + 1) * height))
    out = bytearray()
    prev = bytes(row_bytes)
    for y in range(height):
        start = y * (row_bytes + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + row_bytes]), prev, bpp, y)
        prev = bytes(line)
        out += prev if depth == 8 else _unpack_bits(prev, depth, width)
    samples = bytes(out)
    if ctype == 3:
        return _expand_palette(samples, palette, trns, width, height, depth)
    if ctype == 0 and depth < 8:
        scale = 255 // ((1 << depth) - 1)
        samples = bytes(v * scale for v in samples)
    return Image(width, height, _COLOR_TYPES[ctype], samples)


def _expand_palette(indices: bytes, palette: bytes, trns, width: int, height: int, depth: int) -> Image:
    entries = len(palette) // 3
    if max(indices) >= entries:
        raise PngError("corrupt PNG: palette index %d beyond %d entries" % (max(indices), entries))
    if trns:
        alpha = bytes(trns) + b"\xff" * (entries - len(trns))
        table = [palette[3 * i:3 * i + 3] + alpha[i:i + 1] for i in range(entries)]
        mode = "RGBA"
    else:
        table = [palette[3 * i:3 * i + 3] for i in range(entries)]
        mode = "RGB"
    return Image(width, height, mode, b"".join(map(table.__getitem__, indices)))


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def encode(image: Image, level: int = 6) -> bytes:
    """Encodes an 8-bit non-interlaced PNG (rows filtered with Up)."""
    if image.mode not in _ENCODE_TYPES:
        raise ValueError("cannot encode mode %r" % image.mode)
    stride = image.width * image.channels
    rows = []
    prev = None
    for y in range(image.height):
        line = image.data[y * stride:(y + 1) * stride]
        # Up for every row but the first: cheap in lane arithmetic, and it
        # compresses smooth images far better than no filter.
        rows.append(b"\x00" + line if prev is None else b"\x02" + sub_bytes(line, prev))
        prev = line
    ihdr = struct.pack(">IIBBBBB", image.width, image.height, 8, _ENCODE_TYPES[image.mode], 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"".join(rows), level)) + _chunk(b"IEND", b"")
