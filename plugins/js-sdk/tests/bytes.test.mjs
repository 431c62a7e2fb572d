import { test } from "node:test";
import assert from "node:assert/strict";
import { sdk } from "./load.mjs";

const { utf8, base64, crc32, adler32 } = sdk;
const samples = ["", "plain ascii", "héllo wörld", "日本語テキスト", "emoji 😀🚀 mixed", "\u0000\u007f\u0080\u07ff\u0800\uffff", "a".repeat(20000) + "é"];

test("utf8 matches TextEncoder/TextDecoder", () => {
  for (const s of samples) {
    assert.deepEqual(utf8.encode(s), new TextEncoder().encode(s));
    assert.equal(utf8.decode(new TextEncoder().encode(s)), s);
  }
  assert.deepEqual(utf8.encode("x\ud800y"), new TextEncoder().encode("x\ud800y")); // lone surrogate
  for (const bad of [[0xff], [0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]) {
    const b = Uint8Array.from(bad);
    assert.equal(utf8.decode(b), new TextDecoder().decode(b), `decode ${bad}`);
    assert.throws(() => utf8.decode(b, { fatal: true }), /invalid UTF-8/);
  }
});

test("base64 matches Buffer", () => {
  for (let n = 0; n < 40; n++) {
    const b = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 255);
    const s = Buffer.from(b).toString("base64");
    assert.equal(base64.encode(b), s);
    assert.deepEqual(base64.decode(s), b);
    assert.deepEqual(base64.decode(Buffer.from(b).toString("base64url")), b);
  }
  assert.equal(base64.encode("héllo"), Buffer.from("héllo").toString("base64"));
  assert.throws(() => base64.decode("ab$d"), /invalid base64/);
});

test("crc32 and adler32 check values", () => {
  const s = new TextEncoder().encode("123456789");
  assert.equal(crc32(s), 0xcbf43926);
  assert.equal(adler32(new TextEncoder().encode("Wikipedia")), 0x11e60398);
  const big = Uint8Array.from({ length: 100000 }, () => 255);
  assert.equal(adler32(big), adler32(big.subarray(50000), adler32(big.subarray(0, 50000))));
  assert.equal(crc32(big), crc32(big.subarray(50000), crc32(big.subarray(0, 50000))));
});
