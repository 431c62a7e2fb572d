"""PNG decode/encode round trips, every filter type, and the refusals."""

import os
import random
import struct
import unittest
import zlib

import _path  # noqa: F401
from stagecraft_sdk import InvalidInput, png

INPUTS = os.path.join(os.path.dirname(_path.SDK_ROOT), "..", "examples", "inputs")


def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def filter_row(ftype, line, prev, bpp):
    """A straightforward per-byte PNG filter (the reference the decoder must invert)."""
    out = bytearray()
    for i, x in enumerate(line):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][ftype]
        out.append((x - pred) & 255)
    return bytes(out)


def make_png(width, height, color_type, raw, depth=8, filters=None, palette=None, trns=None, interlace=0):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row_bytes = (width * channels * depth + 7) // 8
    bpp = max(1, channels * depth // 8)
    rows, prev = [], bytes(row_bytes)
    for y in range(height):
        line = raw[y * row_bytes:(y + 1) * row_bytes]
        f = filters[y % len(filters)] if filters else 0
        rows.append(bytes([f]) + filter_row(f, line, prev, bpp))
        prev = line
    data = png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace))
    if palette is not None:
        data += chunk(b"PLTE", palette)
    if trns is not None:
        data += chunk(b"tRNS", trns)
    z = zlib.compress(b"".join(rows))
    # Split the data across two IDAT chunks, as encoders do.
    return data + chunk(b"IDAT", z[:len(z) // 2]) + chunk(b"IDAT", z[len(z) // 2:]) + chunk(b"IEND", b"")


class PngTest(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(7)

    def noise(self, n):
        return bytes(self.rng.randrange(256) for _ in range(n))

    def test_all_color_types_and_filters(self):
        for color_type, mode in ((0, "L"), (4, "LA"), (2, "RGB"), (6, "RGBA")):
            c = png.MODES[mode]
            w, h = 13, 11
            raw = self.noise(w * h * c)
            for filters in ([0], [1], [2], [3], [4], [0, 1, 2, 3, 4]):
                img = png.decode(make_png(w, h, color_type, raw, filters=filters))
                self.assertEqual((img.width, img.height, img.mode), (w, h, mode))
                self.assertEqual(img.data, raw, "colour type %d filters %s" % (color_type, filters))

    def test_palette(self):
        palette = bytes(range(12))  # 4 entries
        idx = bytes(self.rng.randrange(4) for _ in range(5 * 3))
        img = png.decode(make_png(5, 3, 3, idx, palette=palette, filters=[1, 4]))
        self.assertEqual(img.mode, "RGB")
        self.assertEqual(img.data, b"".join(palette[3 * i:3 * i + 3] for i in idx))
        img = png.decode(make_png(5, 3, 3, idx, palette=palette, trns=b"\x00\x80"))
        self.assertEqual(img.mode, "RGBA")
        self.assertEqual(img.pixel(0, 0)[3], [0, 128, 255, 255][idx[0]])

    def test_low_bit_depths(self):
        # 2-bit palette, 10 px wide: 3 bytes a row, the last one half padding.
        idx = [self.rng.randrange(4) for _ in range(10 * 2)]
        packed = bytearray()
        for y in range(2):
            row = idx[y * 10:(y + 1) * 10] + [0, 0]
            packed += bytes((row[i] << 6) | (row[i + 1] << 4) | (row[i + 2] << 2) | row[i + 3] for i in range(0, 12, 4))
        palette = bytes([0, 0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30])
        img = png.decode(make_png(10, 2, 3, bytes(packed), depth=2, palette=palette))
        self.assertEqual(img.data[0::3], bytes(10 * i for i in idx))
        # 1-bit gray scales 0/1 to 0/255.
        img = png.decode(make_png(8, 1, 0, b"\xa5", depth=1))
        self.assertEqual(img.data, bytes([255, 0, 255, 0, 0, 255, 0, 255]))

    def test_encode_round_trip(self):
        for mode in png.MODES:
            img = png.Image(17, 9, mode, self.noise(17 * 9 * png.MODES[mode]))
            self.assertEqual(png.decode(png.encode(img)), img)

    def test_lane_arithmetic(self):
        a, b = self.noise(1000), self.noise(1000)
        self.assertEqual(png.add_bytes(a, b), bytes((x + y) & 255 for x, y in zip(a, b)))
        self.assertEqual(png.sub_bytes(a, b), bytes((x - y) & 255 for x, y in zip(a, b)))
        edge = bytes([0, 255, 128, 127, 1])
        self.assertEqual(png.sub_bytes(edge, edge[::-1]), bytes((x - y) & 255 for x, y in zip(edge, edge[::-1])))

    def test_refusals(self):
        raw16 = bytes(2 * 2 * 6)
        cases = [
            (b"GIF89a....", "not a PNG"),
            (png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0))
             + chunk(b"IDAT", zlib.compress(bytes(2) + raw16)) + chunk(b"IEND", b""), "16-bit PNGs are not supported"),
            (make_png(2, 2, 2, bytes(12), interlace=1), r"interlaced \(Adam7\) PNGs are not supported"),
            (make_png(2, 2, 2, bytes(12))[:-20], "truncated PNG"),
        ]
        bad_crc = bytearray(make_png(2, 2, 2, bytes(12)))
        bad_crc[30] ^= 1
        cases.append((bytes(bad_crc), "bad CRC"))
        for data, pattern in cases:
            with self.assertRaisesRegex(png.PngError, pattern):
                png.decode(data)
        self.assertTrue(issubclass(png.PngError, InvalidInput))

    def test_convert_and_resize(self):
        img = png.Image(4, 2, "RGB", bytes([255, 0, 0] * 4 + [0, 0, 255] * 4))
        g = img.convert("L")
        self.assertEqual(g.data, bytes([76] * 4 + [29] * 4))
        self.assertEqual(img.convert("RGBA").pixel(0, 0), (255, 0, 0, 255))
        small = img.resize_box(2, 1)
        self.assertEqual(small.pixel(0, 0), (128, 0, 128))
        gray = png.Image(3, 3, "L", bytes(range(0, 90, 10)))
        self.assertEqual(gray.resize_box(1, 1).data, bytes([40]))
        self.assertEqual(gray.resize_box(3, 3), gray)

    def test_example_inputs(self):
        for name, size, mode in (("logo.png", (384, 384), "RGB"), ("cells.png", (256, 256), "L")):
            path = os.path.join(INPUTS, name)
            if not os.path.exists(path):
                self.skipTest("examples/inputs not found")
            with open(path, "rb") as f:
                img = png.decode(f.read())
            self.assertEqual(((img.width, img.height), img.mode), (size, mode))
            self.assertEqual(png.decode(png.encode(img)), img)


if __name__ == "__main__":
    unittest.main()
