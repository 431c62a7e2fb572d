// stagecraft.js: the JavaScript SDK for stagecraft stages (SpiderMonkey via
// componentize-js, QuickJS via componentize-qjs). One ES module, no
// dependencies; `stagecraft build` copies it next to the stage's app.js.
//
//   import { defineStage, invalidInput } from "./stagecraft.js";
//   export const stage = defineStage({
//     name: "shout", version: "0.1.0", description: "Upper-cases text",
//     params: { type: "object", properties: { suffix: { type: "string", default: "!" } } },
//     accepts: ["text/plain"], produces: ["text/plain"],
//     run(input) {
//       const a = input.first("text/plain");
//       return { artifacts: [artifact("shout.txt", "text/plain", input.text(a).toUpperCase() + input.params.suffix)] };
//     },
//   });
//
// Everything except `log`/`progress` is pure JS (no TextEncoder, no Buffer:
// QuickJS has neither), so the unit tests run it under plain Node.

import { log as witLog } from "stagecraft:stage/log@0.1.0";
import { report as witReport } from "stagecraft:stage/progress@0.1.0";

// ---------------------------------------------------------------- errors

/** A stage failure; `kind` maps one to one onto the WIT `stage-error`. */
export class StageError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "StageError";
    this.kind = kind; // "invalid-input" | "unavailable" | "failed"
  }
}
StageError.InvalidInput = "invalid-input";
StageError.Unavailable = "unavailable";
StageError.Failed = "failed";

/** The caller's fault (bad params, undecodable input): never retried. */
export const invalidInput = (message) => new StageError("invalid-input", message);
/** Transient trouble (a busy service): retried with backoff. */
export const unavailable = (message) => new StageError("unavailable", message);
/** The stage's own failure. */
export const failed = (message) => new StageError("failed", message);
// The names the brief and the Rust SDK use.
export const InvalidInput = invalidInput;
export const Unavailable = unavailable;
export const Failed = failed;

const KINDS = ["invalid-input", "unavailable", "failed"];

/**
 * Any thrown value as the WIT `stage-error` variant. A thrown non-StageError
 * becomes `failed("TypeError: msg (at frame)")`: otherwise SpiderMonkey traps
 * with a bare `unreachable` and the message never reaches the host.
 */
export function toStageError(e) {
  if (e instanceof StageError && KINDS.includes(e.kind)) return { tag: e.kind, val: String(e.message) };
  // Already the variant (e.g. a stage that throws `{ tag, val }` itself).
  if (e && typeof e === "object" && KINDS.includes(e.tag) && typeof e.val === "string") return { tag: e.tag, val: e.val };
  if (e instanceof Error || (e && typeof e === "object" && "message" in e)) {
    const name = e.name || "Error";
    const frame = firstFrame(e.stack);
    return { tag: "failed", val: `${name}: ${e.message}` + (frame ? ` (at ${frame})` : "") };
  }
  let text;
  try {
    text = typeof e === "string" ? e : JSON.stringify(e);
  } catch (_) {
    text = String(e);
  }
  return { tag: "failed", val: `uncaught ${typeof e}: ${text}` };
}

/** The first stack frame, in either engine's format ("f@file:1:2" or "at f (file:1:2)"). */
export function firstFrame(stack) {
  if (typeof stack !== "string") return "";
  for (const line of stack.split("\n")) {
    const t = line.trim();
    // V8/Node put "Name: message" first; skip it.
    if (!t || (!t.startsWith("at ") && !/[@(]|:\d+/.test(t))) continue;
    if (/^\w*Error\b/.test(t) && !t.includes("@")) continue;
    // Only the file's base name: the build folder's path means nothing to the reader.
    return (t.startsWith("at ") ? t.slice(3) : t).replace(/(^|[@(\s])(?:file:\/\/)?[^\s@()]*\//g, "$1");
  }
  return "";
}

// ---------------------------------------------------------------- log, progress

function fmt(args) {
  return args
    .map((a) => {
      if (typeof a === "string") return a;
      if (a instanceof Error) return `${a.name}: ${a.message}`;
      try {
        return JSON.stringify(a);
      } catch (_) {
        return String(a);
      }
    })
    .join(" ");
}

/** Structured logging into the host's tracing (`log.info("read", n, "bytes")`). */
export const log = {
  trace: (...a) => witLog("trace", fmt(a)),
  debug: (...a) => witLog("debug", fmt(a)),
  info: (...a) => witLog("info", fmt(a)),
  warn: (...a) => witLog("warn", fmt(a)),
  error: (...a) => witLog("error", fmt(a)),
};

/** Progress in [0, 1] with a short status, forwarded to callers. */
export function progress(fraction, message = "") {
  const f = Number(fraction);
  witReport(Number.isFinite(f) ? Math.min(1, Math.max(0, f)) : 0, String(message));
}

// ---------------------------------------------------------------- bytes: utf8, base64, json

export const utf8 = {
  /** A string as UTF-8 bytes (lone surrogates become U+FFFD, like TextEncoder). */
  encode(str) {
    str = String(str);
    const out = [];
    for (let i = 0; i < str.length; i++) {
      let c = str.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < str.length) {
        const d = str.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
        }
      }
      if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return Uint8Array.from(out);
  },
  /** UTF-8 bytes as a string; `fatal: true` throws on malformed input instead of using U+FFFD. */
  decode(bytes, { fatal = false } = {}) {
    const b = bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes);
    let s = "";
    let chunk = [];
    const bad = () => {
      if (fatal) throw new TypeError("invalid UTF-8");
      return 0xfffd;
    };
    for (let i = 0; i < b.length; ) {
      // The WHATWG decoder: a malformed sequence's maximal valid prefix becomes one U+FFFD.
      const c = b[i++];
      let cp, need = 0, lo = 0x80, hi = 0xbf;
      if (c < 0x80) cp = c;
      else if (c >= 0xc2 && c <= 0xdf) (need = 1), (cp = c & 0x1f);
      else if (c >= 0xe0 && c <= 0xef) (need = 2), (cp = c & 0x0f), c === 0xe0 ? (lo = 0xa0) : c === 0xed ? (hi = 0x9f) : 0;
      else if (c >= 0xf0 && c <= 0xf4) (need = 3), (cp = c & 0x07), c === 0xf0 ? (lo = 0x90) : c === 0xf4 ? (hi = 0x8f) : 0;
      else cp = bad();
      for (; need > 0; need--) {
        const d = b[i];
        if (i >= b.length || d < lo || d > hi) {
          cp = bad();
          break;
        }
        cp = (cp << 6) | (d & 63);
        lo = 0x80;
        hi = 0xbf;
        i++;
      }
      if (cp >= 0x10000) {
        cp -= 0x10000;
        chunk.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
      } else chunk.push(cp);
      if (chunk.length > 8000) {
        s += String.fromCharCode.apply(null, chunk);
        chunk = [];
      }
    }
    return s + String.fromCharCode.apply(null, chunk);
  },
};

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = (() => {
  const t = new Int16Array(128).fill(-1);
  for (let i = 0; i < 64; i++) t[B64.charCodeAt(i)] = i;
  t["-".charCodeAt(0)] = 62; // base64url too
  t["_".charCodeAt(0)] = 63;
  return t;
})();

export const base64 = {
  /** Bytes (or a string, as UTF-8) as standard padded base64. */
  encode(data) {
    const b = typeof data === "string" ? utf8.encode(data) : toBytes(data);
    let s = "";
    let i = 0;
    for (; i + 2 < b.length; i += 3) {
      const n = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
      s += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
    }
    if (i < b.length) {
      const n = (b[i] << 16) | ((i + 1 < b.length ? b[i + 1] : 0) << 8);
      s += B64[n >> 18] + B64[(n >> 12) & 63] + (i + 1 < b.length ? B64[(n >> 6) & 63] : "=") + "=";
    }
    return s;
  },
  /** base64 or base64url (padding and whitespace optional) as bytes. */
  decode(str) {
    const clean = String(str).replace(/[\s=]/g, "");
    if (clean.length % 4 === 1) throw new TypeError("invalid base64: bad length");
    const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
    let acc = 0,
      bits = 0,
      o = 0;
    for (let i = 0; i < clean.length; i++) {
      const c = clean.charCodeAt(i);
      const v = c < 128 ? B64_INDEX[c] : -1;
      if (v < 0) throw new TypeError(`invalid base64: character ${JSON.stringify(clean[i])} at ${i}`);
      acc = (acc << 6) | v;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out[o++] = (acc >> bits) & 0xff;
      }
    }
    return out.subarray(0, o);
  },
};

/** Uint8Array from a Uint8Array, ArrayBuffer, array of numbers, or string (as UTF-8). */
export function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (typeof data === "string") return utf8.encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) return Uint8Array.from(data);
  throw new TypeError(`artifact data must be bytes or a string, got ${data === null ? "null" : typeof data}`);
}

// ---------------------------------------------------------------- params: JSON Schema subset

function typeOf(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function typeMatches(t, v) {
  const actual = typeOf(v);
  return t === actual || (t === "number" && actual === "integer");
}

function deepEqual(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

const clone = (v) => (v === undefined ? v : JSON.parse(JSON.stringify(v)));

function where(path) {
  return path ? `param \`${path}\`` : "params";
}

/**
 * Checks `value` against a JSON Schema subset (type, properties, required,
 * default, enum, const, minimum/maximum (+exclusive), minLength/maxLength,
 * pattern, items, minItems/maxItems, additionalProperties) and returns it
 * with defaults filled in. Throws `invalidInput` naming the field.
 */
export function validate(schema, value, path = "") {
  if (schema === true || schema === undefined) return value;
  if (schema === false) throw invalidInput(`${where(path)}: not allowed`);
  const show = (v) => {
    const s = JSON.stringify(v);
    return s && s.length > 60 ? s.slice(0, 57) + "..." : s;
  };
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => typeMatches(t, value)))
      throw invalidInput(`${where(path)}: expected ${types.join(" or ")}, got ${typeOf(value)}${value !== null && typeof value !== "object" ? " " + show(value) : ""}`);
  }
  if (schema.enum !== undefined && !schema.enum.some((e) => deepEqual(e, value)))
    throw invalidInput(`${where(path)}: must be one of ${schema.enum.map(show).join(", ")} (got ${show(value)})`);
  if (schema.const !== undefined && !deepEqual(schema.const, value)) throw invalidInput(`${where(path)}: must be ${show(schema.const)} (got ${show(value)})`);
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) throw invalidInput(`${where(path)}: must be >= ${schema.minimum} (got ${value})`);
    if (schema.maximum !== undefined && value > schema.maximum) throw invalidInput(`${where(path)}: must be <= ${schema.maximum} (got ${value})`);
    if (typeof schema.exclusiveMinimum === "number" && value <= schema.exclusiveMinimum) throw invalidInput(`${where(path)}: must be > ${schema.exclusiveMinimum} (got ${value})`);
    if (typeof schema.exclusiveMaximum === "number" && value >= schema.exclusiveMaximum) throw invalidInput(`${where(path)}: must be < ${schema.exclusiveMaximum} (got ${value})`);
  }
  if (typeof value === "string") {
    const len = Array.from(value).length; // code points, as JSON Schema counts
    if (schema.minLength !== undefined && len < schema.minLength) throw invalidInput(`${where(path)}: must be at least ${schema.minLength} characters (got ${len})`);
    if (schema.maxLength !== undefined && len > schema.maxLength) throw invalidInput(`${where(path)}: must be at most ${schema.maxLength} characters (got ${len})`);
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, "u").test(value)) throw invalidInput(`${where(path)}: must match /${schema.pattern}/ (got ${show(value)})`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) throw invalidInput(`${where(path)}: needs at least ${schema.minItems} items (got ${value.length})`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) throw invalidInput(`${where(path)}: takes at most ${schema.maxItems} items (got ${value.length})`);
    if (schema.items !== undefined) value = value.map((v, i) => validate(schema.items, v, `${path}[${i}]`));
  }
  if (typeOf(value) === "object") {
    const props = schema.properties || {};
    const out = {};
    for (const key of Object.keys(value)) {
      const sub = path ? `${path}.${key}` : key;
      if (Object.prototype.hasOwnProperty.call(props, key)) out[key] = validate(props[key], value[key], sub);
      else if (schema.additionalProperties === false) {
        const known = Object.keys(props);
        throw invalidInput(`params: unknown field \`${sub}\`` + (known.length ? ` (expected ${known.map((k) => "`" + k + "`").join(", ")})` : ""));
      } else if (schema.additionalProperties && typeof schema.additionalProperties === "object") out[key] = validate(schema.additionalProperties, value[key], sub);
      else out[key] = value[key];
    }
    for (const key of schema.required || [])
      if (!(key in out) && !(props[key] && props[key].default !== undefined)) throw invalidInput(`${where(path ? `${path}.${key}` : key)}: required`);
    for (const key of Object.keys(props))
      if (!(key in out) && props[key] && props[key].default !== undefined) out[key] = validate(props[key], clone(props[key].default), path ? `${path}.${key}` : key);
    value = out;
  }
  return value;
}

/** The params JSON string from the host, parsed and validated against `schema`. */
export function parseParams(schema, text) {
  let value;
  try {
    value = text === undefined || text === "" ? {} : JSON.parse(text);
  } catch (e) {
    throw invalidInput(`params are not valid JSON: ${e.message}`);
  }
  return validate(schema, value);
}

// ---------------------------------------------------------------- artifacts

/** Whether media type `type` matches `pattern` (`image/png`, `image/*`, `*` or `* /*`). */
export function matchesMediaType(pattern, type) {
  const p = String(pattern).toLowerCase().split(";")[0].trim();
  const t = String(type).toLowerCase().split(";")[0].trim();
  if (p === "*" || p === "*/*" || p === t) return true;
  return p.endsWith("/*") && t.startsWith(p.slice(0, -1));
}

/** An output artifact; `data` may be bytes, a string (UTF-8) or, for JSON media types, any value. */
export function artifact(name, mediaType, data) {
  if (typeof name !== "string" || !name) throw new TypeError("artifact name must be a non-empty string");
  if (typeof mediaType !== "string" || !mediaType) throw new TypeError(`artifact ${name}: media type must be a non-empty string`);
  if (!(data instanceof Uint8Array) && typeof data !== "string" && /json/.test(mediaType) && data !== undefined) data = JSON.stringify(data, null, 2);
  return { name, mediaType, data: toBytes(data) };
}

/** The file name without its last extension (`a/b.tar.gz` -> `b.tar`). */
export function stem(name) {
  const base = String(name).split("/").pop();
  const dot = base.lastIndexOf(".");
  return dot > 0 ? base.slice(0, dot) : base;
}

/** What `run` receives: the artifacts, validated params, and lookups that fail as `invalid-input`. */
export class Input {
  constructor(artifacts, params, rawParams) {
    this.artifacts = artifacts;
    this.params = params;
    this.rawParams = rawParams;
  }
  /** All artifacts whose media type matches (`image/*` allowed). */
  all(mediaType = "*") {
    return this.artifacts.filter((a) => matchesMediaType(mediaType, a.mediaType));
  }
  /** The first matching artifact, or undefined. */
  find(mediaType = "*") {
    return this.artifacts.find((a) => matchesMediaType(mediaType, a.mediaType));
  }
  /** The first matching artifact, or `invalid-input` saying what was missing. */
  first(mediaType = "*") {
    const a = this.find(mediaType);
    if (!a) throw invalidInput(mediaType === "*" ? "this stage needs at least one input artifact" : `this stage needs an input artifact of type ${mediaType} (got ${this.artifacts.map((x) => x.mediaType).join(", ") || "none"})`);
    return a;
  }
  /** The artifact named `name`, or `invalid-input`. */
  named(name) {
    const a = this.artifacts.find((x) => x.name === name);
    if (!a) throw invalidInput(`no input artifact named ${JSON.stringify(name)}`);
    return a;
  }
  /** An artifact's bytes as UTF-8 text; malformed UTF-8 is `invalid-input`. */
  text(a) {
    try {
      return utf8.decode(a.data, { fatal: true });
    } catch (_) {
      throw invalidInput(`${a.name}: not valid UTF-8 text`);
    }
  }
  /** An artifact parsed as JSON; bad JSON is `invalid-input` naming it. */
  json(a) {
    const t = this.text(a);
    try {
      return JSON.parse(t);
    } catch (e) {
      throw invalidInput(`${a.name}: not valid JSON: ${e.message}`);
    }
  }
}

/** Output builder: `new Output().artifact(...).meta("count", n)`; `run` may also return a plain `{ artifacts, metadata }`. */
export class Output {
  constructor() {
    this.artifacts = [];
    this.metadata = {};
  }
  artifact(name, mediaType, data) {
    this.artifacts.push(artifact(name, mediaType, data));
    return this;
  }
  meta(key, value) {
    this.metadata[key] = value;
    return this;
  }
}

/** What `run` returned, as the WIT `stage-output` (names unique, metadata a JSON object string). */
export function toStageOutput(result) {
  if (result === undefined || result === null) result = {};
  if (typeof result !== "object") throw new TypeError(`run must return { artifacts, metadata } or an Output, got ${typeof result}`);
  const artifacts = (result.artifacts || []).map((a) => {
    if (!a || typeof a !== "object") throw new TypeError("every output artifact must be an object { name, mediaType, data }");
    return artifact(a.name, a.mediaType || a.media_type, a.data);
  });
  const seen = new Set();
  for (const a of artifacts) {
    if (seen.has(a.name)) throw new TypeError(`two output artifacts are named ${JSON.stringify(a.name)}`);
    seen.add(a.name);
  }
  let metadata = result.metadata === undefined ? {} : result.metadata;
  if (typeof metadata === "string") {
    if (typeOf(JSON.parse(metadata)) !== "object") throw new TypeError("metadata must be a JSON object");
  } else if (typeOf(metadata) === "object") metadata = JSON.stringify(metadata);
  else throw new TypeError(`metadata must be an object, got ${typeOf(metadata)}`);
  return { artifacts, metadata };
}

// ---------------------------------------------------------------- the stage

/**
 * The `stage` export both engines want: `export const stage = defineStage({...})`.
 * `params` is a plain JSON Schema object (see `validate`); `deterministic: false`
 * marks a stage that reads a clock or a random source, so the host reuses none of
 * its results.
 */
export function defineStage(spec) {
  for (const key of ["name", "version", "run"]) if (!spec || spec[key] === undefined) throw new TypeError(`defineStage: \`${key}\` is required`);
  if (typeof spec.run !== "function") throw new TypeError("defineStage: `run` must be a function");
  const schema = spec.params || { type: "object", properties: {}, additionalProperties: false };
  const described = spec.deterministic === false ? Object.assign({}, schema, { "x-stagecraft-deterministic": false }) : schema;
  const info = {
    name: String(spec.name),
    version: String(spec.version),
    description: String(spec.description || ""),
    paramsSchema: JSON.stringify(described),
    accepts: (spec.accepts || []).map(String),
    produces: (spec.produces || []).map(String),
  };
  return {
    describe() {
      return info;
    },
    run(raw) {
      // Every failure leaves here as the WIT variant, never as an uncaught exception.
      try {
        const artifacts = (raw.artifacts || []).map((a) => ({ name: a.name, mediaType: a.mediaType, data: toBytes(a.data) }));
        const input = new Input(artifacts, parseParams(schema, raw.params), raw.params);
        return toStageOutput(spec.run(input));
      } catch (e) {
        throw toStageError(e);
      }
    },
  };
}

// ---------------------------------------------------------------- checksums

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (PNG, zip, gzip); pass the previous value to continue. */
export function crc32(bytes, crc = 0) {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** Adler-32 (zlib); pass the previous value to continue. */
export function adler32(bytes, adler = 1) {
  let a = adler & 0xffff,
    b = adler >>> 16;
  for (let i = 0; i < bytes.length; ) {
    const end = Math.min(i + 3800, bytes.length); // stays below 2^32 before the modulo
    for (; i < end; i++) b += a += bytes[i];
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

// ---------------------------------------------------------------- deflate / inflate (zlib)

// Length and distance code bases (RFC 1951 3.2.5).
const LBASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEXT = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DBASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DEXT = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

class BitWriter {
  constructor() {
    this.buf = new Uint8Array(1024);
    this.len = 0;
    this.acc = 0;
    this.n = 0;
  }
  byte(b) {
    if (this.len === this.buf.length) {
      const nb = new Uint8Array(this.buf.length * 2);
      nb.set(this.buf);
      this.buf = nb;
    }
    this.buf[this.len++] = b;
  }
  bits(v, n) {
    // LSB first, as deflate wants for everything but Huffman codes.
    this.acc |= v << this.n;
    this.n += n;
    while (this.n >= 8) {
      this.byte(this.acc & 0xff);
      this.acc >>>= 8;
      this.n -= 8;
    }
  }
  code(c, n) {
    // Huffman codes go MSB first: reverse them.
    let r = 0;
    for (let i = 0; i < n; i++) r |= ((c >> i) & 1) << (n - 1 - i);
    this.bits(r, n);
  }
  finish() {
    if (this.n > 0) this.byte(this.acc & 0xff);
    this.acc = this.n = 0;
    return this.buf.subarray(0, this.len);
  }
}

function fixedLit(w, v) {
  if (v < 144) w.code(0x30 + v, 8);
  else if (v < 256) w.code(0x190 + v - 144, 9);
  else if (v < 280) w.code(v - 256, 7);
  else w.code(0xc0 + v - 280, 8);
}

/**
 * zlib-wrapped deflate with the fixed Huffman code and a hash-chain LZ77
 * (level-1 effort: good on flat images and text, never worse than ~1.1x stored).
 */
export function zlibDeflate(data) {
  data = toBytes(data);
  const w = new BitWriter();
  w.byte(0x78);
  w.byte(0x01);
  w.bits(1, 1); // one final block
  w.bits(1, 2); // fixed Huffman
  const HBITS = 15,
    WIN = 32768,
    MAXCHAIN = 16;
  const head = new Int32Array(1 << HBITS).fill(-1);
  const prev = new Int32Array(WIN);
  const hash = (i) => (((data[i] << 10) ^ (data[i + 1] << 5) ^ data[i + 2]) & ((1 << HBITS) - 1)) >>> 0;
  const insert = (i) => {
    if (i + 2 >= data.length) return;
    const h = hash(i);
    prev[i & (WIN - 1)] = head[h];
    head[h] = i;
  };
  let i = 0;
  while (i < data.length) {
    let best = 0,
      dist = 0;
    if (i + 2 < data.length) {
      let j = head[hash(i)];
      for (let chain = 0; j >= 0 && i - j <= WIN && chain < MAXCHAIN; chain++) {
        let l = 0;
        const max = Math.min(258, data.length - i);
        while (l < max && data[j + l] === data[i + l]) l++;
        if (l > best) {
          best = l;
          dist = i - j;
          if (l === max) break;
        }
        const pj = prev[j & (WIN - 1)];
        if (pj >= j) break;
        j = pj;
      }
    }
    if (best >= 3) {
      let lc = 0;
      while (lc < 28 && LBASE[lc + 1] <= best) lc++;
      fixedLit(w, 257 + lc);
      if (LEXT[lc]) w.bits(best - LBASE[lc], LEXT[lc]);
      let dc = 0;
      while (dc < 29 && DBASE[dc + 1] <= dist) dc++;
      w.code(dc, 5);
      if (DEXT[dc]) w.bits(dist - DBASE[dc], DEXT[dc]);
      for (let k = 0; k < best; k++) insert(i + k);
      i += best;
    } else {
      fixedLit(w, data[i]);
      insert(i);
      i++;
    }
  }
  fixedLit(w, 256);
  const out = w.finish();
  const a = adler32(data);
  const res = new Uint8Array(out.length + 4);
  res.set(out);
  res.set([a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255], out.length);
  return res;
}

// Canonical Huffman decoding table: counts per length and symbols in code order.
function huffTable(lengths) {
  const counts = new Uint16Array(16);
  for (const l of lengths) counts[l]++;
  counts[0] = 0;
  const offs = new Uint16Array(16);
  for (let i = 1; i < 16; i++) offs[i] = offs[i - 1] + counts[i - 1];
  const symbols = new Uint16Array(lengths.length);
  for (let s = 0; s < lengths.length; s++) if (lengths[s]) symbols[offs[lengths[s]]++] = s;
  return { counts, symbols };
}

/** Inflates a zlib stream (stored, fixed and dynamic blocks); throws Error on corrupt data. */
export function zlibInflate(input) {
  const src = toBytes(input);
  if (src.length < 6 || (src[0] & 0x0f) !== 8 || ((src[0] << 8) | src[1]) % 31 !== 0) throw new Error("not a zlib stream");
  if (src[1] & 0x20) throw new Error("zlib preset dictionaries are not supported");
  let pos = 2,
    acc = 0,
    n = 0;
  let out = new Uint8Array(Math.max(1024, src.length * 4)),
    olen = 0;
  const need = (k) => {
    if (olen + k <= out.length) return;
    let size = out.length * 2;
    while (size < olen + k) size *= 2;
    const nb = new Uint8Array(size);
    nb.set(out.subarray(0, olen));
    out = nb;
  };
  const bits = (k) => {
    while (n < k) {
      if (pos >= src.length) throw new Error("zlib stream is truncated");
      acc |= src[pos++] << n;
      n += 8;
    }
    const v = acc & ((1 << k) - 1);
    acc >>>= k;
    n -= k;
    return v;
  };
  const decode = (t) => {
    let code = 0,
      first = 0,
      index = 0;
    for (let len = 1; len < 16; len++) {
      code |= bits(1);
      const count = t.counts[len];
      if (code - first < count) return t.symbols[index + code - first];
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    throw new Error("bad Huffman code in deflate stream");
  };
  const fixedL = new Uint8Array(288);
  fixedL.fill(8, 0, 144);
  fixedL.fill(9, 144, 256);
  fixedL.fill(7, 256, 280);
  fixedL.fill(8, 280, 288);
  const FIXED_LIT = huffTable(fixedL);
  const FIXED_DIST = huffTable(new Uint8Array(30).fill(5));
  const ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
  let last = 0;
  while (!last) {
    last = bits(1);
    const type = bits(2);
    if (type === 0) {
      acc = n = 0; // stored: skip to the byte boundary
      if (pos + 4 > src.length) throw new Error("zlib stream is truncated");
      const len = src[pos] | (src[pos + 1] << 8);
      if ((len ^ 0xffff) !== (src[pos + 2] | (src[pos + 3] << 8))) throw new Error("bad stored block length");
      pos += 4;
      if (pos + len > src.length) throw new Error("zlib stream is truncated");
      need(len);
      out.set(src.subarray(pos, pos + len), olen);
      olen += len;
      pos += len;
      continue;
    }
    let lit, dist;
    if (type === 1) (lit = FIXED_LIT), (dist = FIXED_DIST);
    else if (type === 2) {
      const hlit = bits(5) + 257,
        hdist = bits(5) + 1,
        hclen = bits(4) + 4;
      const cl = new Uint8Array(19);
      for (let i = 0; i < hclen; i++) cl[ORDER[i]] = bits(3);
      const clt = huffTable(cl);
      const lens = new Uint8Array(hlit + hdist);
      for (let i = 0; i < hlit + hdist; ) {
        const sym = decode(clt);
        if (sym < 16) lens[i++] = sym;
        else {
          let rep, val = 0;
          if (sym === 16) {
            if (i === 0) throw new Error("bad code lengths in deflate stream");
            val = lens[i - 1];
            rep = 3 + bits(2);
          } else if (sym === 17) rep = 3 + bits(3);
          else rep = 11 + bits(7);
          if (i + rep > hlit + hdist) throw new Error("bad code lengths in deflate stream");
          lens.fill(val, i, i + rep);
          i += rep;
        }
      }
      lit = huffTable(lens.subarray(0, hlit));
      dist = huffTable(lens.subarray(hlit));
    } else throw new Error("bad deflate block type");
    for (;;) {
      const sym = decode(lit);
      if (sym < 256) {
        need(1);
        out[olen++] = sym;
      } else if (sym === 256) break;
      else {
        const li = sym - 257;
        if (li >= 29) throw new Error("bad length code in deflate stream");
        const len = LBASE[li] + bits(LEXT[li]);
        const di = decode(dist);
        if (di >= 30) throw new Error("bad distance code in deflate stream");
        const d = DBASE[di] + bits(DEXT[di]);
        if (d > olen) throw new Error("deflate distance points before the start");
        need(len);
        for (let k = 0; k < len; k++, olen++) out[olen] = out[olen - d];
      }
    }
  }
  return out.subarray(0, olen);
}

// ---------------------------------------------------------------- PNG

const PNG_SIG = [137, 80, 78, 71, 13, 10, 26, 10];
const CHANNELS = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const COLOR_NAMES = { 0: "gray", 2: "rgb", 3: "palette", 4: "gray-alpha", 6: "rgba" };

function be32(b, i) {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}

function bytesAndName(x) {
  if (x && typeof x === "object" && !(x instanceof Uint8Array) && "data" in x) return [toBytes(x.data), x.name];
  return [toBytes(x), undefined];
}

function pngFail(name, msg) {
  // Bad input bytes are the caller's fault.
  return invalidInput(name ? `${name}: ${msg}` : msg);
}

export const png = {
  /** Whether the bytes start with the PNG signature. */
  is(data) {
    const [b] = bytesAndName(data);
    return b.length >= 8 && PNG_SIG.every((v, i) => b[i] === v);
  },

  /**
   * The IHDR of a PNG (bytes or an artifact): `{ width, height, bitDepth, colorType,
   * colorName, interlace }`; not a PNG is `invalid-input` naming the artifact.
   */
  header(data) {
    const [b, name] = bytesAndName(data);
    if (!png.is(b)) throw pngFail(name, "not a PNG (bad signature)");
    if (b.length < 33 || be32(b, 8) !== 13 || String.fromCharCode(b[12], b[13], b[14], b[15]) !== "IHDR") throw pngFail(name, "not a PNG (no IHDR chunk)");
    const h = { width: be32(b, 16), height: be32(b, 20), bitDepth: b[24], colorType: b[25], interlace: b[28] };
    h.colorName = COLOR_NAMES[h.colorType] || "unknown";
    return h;
  },

  /**
   * Encodes 8-bit pixels as a PNG: `{ width, height, data, channels }` with
   * channels 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA, the default), rows
   * top to bottom. Each row gets the PNG filter with the smallest sum.
   */
  encode({ width, height, data, channels = 4 }) {
    const ct = { 1: 0, 2: 4, 3: 2, 4: 6 }[channels];
    if (ct === undefined) throw new TypeError(`png.encode: channels must be 1, 2, 3 or 4 (got ${channels})`);
    if (!(width > 0 && height > 0 && Number.isInteger(width) && Number.isInteger(height))) throw new TypeError(`png.encode: bad size ${width}x${height}`);
    const px = toBytes(data);
    const stride = width * channels;
    if (px.length !== stride * height) throw new TypeError(`png.encode: expected ${stride * height} bytes for ${width}x${height}x${channels}, got ${px.length}`);
    const raw = new Uint8Array((stride + 1) * height);
    const cand = new Uint8Array(stride);
    for (let y = 0; y < height; y++) {
      const row = y * stride,
        up = row - stride;
      let bestF = 0,
        bestSum = Infinity;
      for (let f = 0; f < 5; f++) {
        let sum = 0;
        for (let x = 0; x < stride; x++) {
          const a = x >= channels ? px[row + x - channels] : 0;
          const b = y > 0 ? px[up + x] : 0;
          const c = y > 0 && x >= channels ? px[up + x - channels] : 0;
          const v = (px[row + x] - (f === 0 ? 0 : f === 1 ? a : f === 2 ? b : f === 3 ? (a + b) >> 1 : paeth(a, b, c))) & 0xff;
          cand[x] = v;
          sum += v < 128 ? v : 256 - v;
        }
        if (sum < bestSum) {
          bestSum = sum;
          bestF = f;
          raw[y * (stride + 1)] = f;
          raw.set(cand, y * (stride + 1) + 1);
        }
      }
    }
    const ihdr = new Uint8Array(13);
    ihdr.set([width >>> 24, (width >>> 16) & 255, (width >>> 8) & 255, width & 255, height >>> 24, (height >>> 16) & 255, (height >>> 8) & 255, height & 255, 8, ct, 0, 0, 0]);
    const chunks = [chunk("IHDR", ihdr), chunk("IDAT", zlibDeflate(raw)), chunk("IEND", new Uint8Array(0))];
    const total = 8 + chunks.reduce((s, c) => s + c.length, 0);
    const out = new Uint8Array(total);
    out.set(PNG_SIG);
    let o = 8;
    for (const c of chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  },

  /**
   * Decodes a non-interlaced PNG (any colour type, bit depth 1-16) to 8-bit
   * RGBA: `{ width, height, bitDepth, colorType, data }` (16-bit samples keep
   * their high byte). Corrupt input is `invalid-input`.
   */
  decode(input) {
    const [b, name] = bytesAndName(input);
    const h = png.header(b);
    if (h.interlace) throw pngFail(name, "interlaced PNGs are not supported");
    if (!CHANNELS[h.colorType] || ![1, 2, 4, 8, 16].includes(h.bitDepth)) throw pngFail(name, `unsupported PNG colour type ${h.colorType} / bit depth ${h.bitDepth}`);
    const idat = [];
    let palette = null,
      trns = null;
    for (let i = 8; i + 12 <= b.length; ) {
      const len = be32(b, i);
      const type = String.fromCharCode(b[i + 4], b[i + 5], b[i + 6], b[i + 7]);
      if (i + 12 + len > b.length) throw pngFail(name, `PNG chunk ${type} is truncated`);
      const body = b.subarray(i + 8, i + 8 + len);
      if (type === "IDAT") idat.push(body);
      else if (type === "PLTE") palette = body;
      else if (type === "tRNS") trns = body;
      else if (type === "IEND") break;
      i += 12 + len;
    }
    if (!idat.length) throw pngFail(name, "PNG has no image data");
    const z = new Uint8Array(idat.reduce((s, c) => s + c.length, 0));
    let o = 0;
    for (const c of idat) {
      z.set(c, o);
      o += c.length;
    }
    let raw;
    try {
      raw = zlibInflate(z);
    } catch (e) {
      throw pngFail(name, `corrupt PNG data: ${e.message}`);
    }
    const ch = CHANNELS[h.colorType];
    const bpp = Math.max(1, (ch * h.bitDepth) >> 3); // bytes per complete pixel, for filters
    const stride = Math.ceil((h.width * ch * h.bitDepth) / 8);
    if (raw.length < (stride + 1) * h.height) throw pngFail(name, "PNG image data is too short");
    const px = new Uint8Array(stride * h.height);
    for (let y = 0; y < h.height; y++) {
      const f = raw[y * (stride + 1)];
      const src = y * (stride + 1) + 1,
        row = y * stride,
        up = row - stride;
      for (let x = 0; x < stride; x++) {
        const a = x >= bpp ? px[row + x - bpp] : 0;
        const bb = y > 0 ? px[up + x] : 0;
        const c = y > 0 && x >= bpp ? px[up + x - bpp] : 0;
        let p;
        if (f === 0) p = 0;
        else if (f === 1) p = a;
        else if (f === 2) p = bb;
        else if (f === 3) p = (a + bb) >> 1;
        else if (f === 4) p = paeth(a, bb, c);
        else throw pngFail(name, `bad PNG filter type ${f} in row ${y}`);
        px[row + x] = (raw[src + x] + p) & 0xff;
      }
    }
    const out = new Uint8Array(h.width * h.height * 4);
    const d = h.bitDepth;
    const sample = (row, i) => {
      // The i-th sample of a row, scaled to 8 bits (palette indices unscaled).
      if (d === 8) return px[row + i];
      if (d === 16) return px[row + 2 * i];
      const v = (px[row + ((i * d) >> 3)] >> (8 - d - ((i * d) & 7))) & ((1 << d) - 1);
      return h.colorType === 3 ? v : Math.round((v * 255) / ((1 << d) - 1));
    };
    const rawSample = (row, i) => (d === 16 ? (px[row + 2 * i] << 8) | px[row + 2 * i + 1] : d === 8 ? px[row + i] : (px[row + ((i * d) >> 3)] >> (8 - d - ((i * d) & 7))) & ((1 << d) - 1));
    const trnsKey = trns && (h.colorType === 0 || h.colorType === 2) ? [0, 1, 2].map((k) => (trns[2 * k] << 8) | trns[2 * k + 1]) : null;
    for (let y = 0; y < h.height; y++) {
      const row = y * stride;
      for (let x = 0; x < h.width; x++) {
        const o4 = (y * h.width + x) * 4;
        if (h.colorType === 3) {
          const idx = sample(row, x);
          if (!palette || idx * 3 + 2 >= palette.length) throw pngFail(name, "PNG palette index out of range");
          out[o4] = palette[idx * 3];
          out[o4 + 1] = palette[idx * 3 + 1];
          out[o4 + 2] = palette[idx * 3 + 2];
          out[o4 + 3] = trns && idx < trns.length ? trns[idx] : 255;
        } else if (h.colorType === 0 || h.colorType === 4) {
          const g = sample(row, x * ch);
          out[o4] = out[o4 + 1] = out[o4 + 2] = g;
          out[o4 + 3] = h.colorType === 4 ? sample(row, x * 2 + 1) : trnsKey && rawSample(row, x) === trnsKey[0] ? 0 : 255;
        } else {
          for (let k = 0; k < 3; k++) out[o4 + k] = sample(row, x * ch + k);
          out[o4 + 3] = h.colorType === 6 ? sample(row, x * 4 + 3) : trnsKey && [0, 1, 2].every((k) => rawSample(row, x * 3 + k) === trnsKey[k]) ? 0 : 255;
        }
      }
    }
    return { width: h.width, height: h.height, bitDepth: h.bitDepth, colorType: h.colorType, data: out };
  },
};

function paeth(a, b, c) {
  const p = a + b - c,
    pa = Math.abs(p - a),
    pb = Math.abs(p - b),
    pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

function chunk(type, body) {
  const out = new Uint8Array(12 + body.length);
  const len = body.length;
  out.set([len >>> 24, (len >>> 16) & 255, (len >>> 8) & 255, len & 255]);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(body, 8);
  const c = crc32(out.subarray(4, 8 + len));
  out.set([c >>> 24, (c >>> 16) & 255, (c >>> 8) & 255, c & 255], 8 + len);
  return out;
}
