import { test } from "node:test";
import assert from "node:assert/strict";
import zlib from "node:zlib";
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { sdk } from "./load.mjs";

const { png, zlibDeflate, zlibInflate } = sdk;
const inputs = fileURLToPath(new URL("../../../examples/inputs/", import.meta.url));

function data(n, kind) {
  return Uint8Array.from({ length: n }, (_, i) => (kind === "noise" ? (i * 2654435761) >>> 24 : kind === "flat" ? 7 : (i >> 4) & 255));
}

test("deflate output inflates with zlib, and zlib's output inflates with ours", () => {
  for (const kind of ["noise", "flat", "ramp"])
    for (const n of [0, 1, 100, 70000]) {
      const d = data(n, kind);
      const ours = zlibDeflate(d);
      assert.deepEqual(new Uint8Array(zlib.inflateSync(ours)), d, `${kind} ${n}`);
      if (kind === "flat" && n > 1000) assert.ok(ours.length < n / 20, `flat data compresses (${ours.length})`);
      for (const level of [0, 1, 9]) assert.deepEqual(zlibInflate(zlib.deflateSync(d, { level })), d, `inflate ${kind} ${n} level ${level}`);
    }
  assert.throws(() => zlibInflate(Uint8Array.from([1, 2, 3, 4, 5, 6])), /not a zlib stream/);
  const z = zlib.deflateSync(data(5000, "noise"));
  assert.throws(() => zlibInflate(z.subarray(0, z.length / 2)), /truncated|bad/);
});

test("png header and decode of the example inputs match zlib-level expectations", () => {
  for (const f of ["cells.png", "logo.png"]) {
    const b = new Uint8Array(fs.readFileSync(inputs + f));
    const h = png.header({ name: f, data: b });
    assert.ok(h.width > 0 && h.height > 0 && [1, 2, 4, 8, 16].includes(h.bitDepth), JSON.stringify(h));
    const img = png.decode(b);
    assert.equal(img.data.length, h.width * h.height * 4);
    // Re-encode and decode again: the pixels survive.
    const again = png.decode(png.encode({ width: img.width, height: img.height, data: img.data, channels: 4 }));
    assert.deepEqual(again.data, img.data);
  }
  assert.throws(() => png.header({ name: "x.png", data: new Uint8Array(10) }), (e) => e.kind === "invalid-input" && /^x\.png: not a PNG/.test(e.message));
});

test("encode gray and RGBA, and decode sub-byte and palette PNGs", () => {
  const gray = png.encode({ width: 3, height: 2, channels: 1, data: [0, 128, 255, 10, 20, 30] });
  assert.deepEqual(png.header(gray), { width: 3, height: 2, bitDepth: 8, colorType: 0, interlace: 0, colorName: "gray" });
  assert.deepEqual(Array.from(png.decode(gray).data.filter((_, i) => i % 4 === 0)), [0, 128, 255, 10, 20, 30]);
  const rgba = Uint8Array.from({ length: 64 * 64 * 4 }, (_, i) => (i * 7) & 255);
  assert.deepEqual(png.decode(png.encode({ width: 64, height: 64, data: rgba })).data, rgba);
  // A hand-built 2-bit palette PNG (4x1: indices 0 1 2 3).
  const raw = Uint8Array.from([0, 0b00011011]);
  const pal = Uint8Array.from([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]);
  const chunk = (type, body) => {
    const t = Buffer.from(type);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(sdk.crc32(Buffer.concat([t, body])));
    return Buffer.concat([len, t, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(4, 0);
  ihdr.writeUInt32BE(1, 4);
  ihdr[8] = 2;
  ihdr[9] = 3;
  const file = Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr), chunk("PLTE", Buffer.from(pal)), chunk("tRNS", Buffer.from([255, 255, 255, 0])), chunk("IDAT", zlib.deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
  assert.deepEqual(Array.from(png.decode(new Uint8Array(file)).data), [255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 9, 9, 9, 0]);
});
