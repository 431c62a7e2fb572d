// stagecraft-http.js: a blocking HTTP client for stages built for world
// `http-stage`, straight on the `wasi:http/outgoing-handler@0.2.12` import
// (SpiderMonkey's `fetch` returns a Promise that a synchronous `run` cannot
// wait for). Import it only from a stage built with `-n http-stage`: the
// imports below do not exist in world `stage`.
//
//   import { http } from "./stagecraft-http.js";
//   const res = http.postJson("http://127.0.0.1:8080/v1/generate", { prompt });
//   const out = res.json();          // res.status, res.headers, res.body, res.text()
//
// The host lets a stage reach only the hosts granted to it (`--http-grant
// STAGE=host:port`) and adds its API key as a bearer token.

import { handle } from "wasi:http/outgoing-handler@0.2.12";
import { Fields, OutgoingRequest, OutgoingBody, RequestOptions } from "wasi:http/types@0.2.12";
import { utf8, invalidInput, unavailable, failed, StageError } from "./stagecraft.js";

const METHODS = ["get", "head", "post", "put", "delete", "connect", "options", "trace", "patch"];

// Engines wrap the error of a result-returning import differently
// (SpiderMonkey: an Error with `payload`; QuickJS: the value itself).
const payload = (e) => (e && typeof e === "object" && "payload" in e ? e.payload : e);

function drop(resource) {
  if (resource && typeof resource[Symbol.dispose] === "function") resource[Symbol.dispose]();
}

/** `http://host:port/path?q` as its parts; anything else is `invalid-input`. */
export function parseUrl(url) {
  const m = /^(https?):\/\/([^/?#\s]+)([^#\s]*)/i.exec(String(url));
  if (!m) throw invalidInput(`not an http(s) URL: ${JSON.stringify(String(url))}`);
  const path = m[3] || "/";
  return { scheme: m[1].toLowerCase(), authority: m[2], pathWithQuery: path.startsWith("/") ? path : "/" + path };
}

/** A `wasi:http` error-code variant as a readable phrase. */
export function describeErrorCode(code) {
  const c = payload(code);
  if (!c || typeof c !== "object") return String(c);
  const tag = String(c.tag);
  const val = c.val;
  switch (tag.toLowerCase()) {
    case "http-request-denied":
      return "the host refused the request: this stage is not granted that host (the operator grants hosts with --http-grant STAGE=host:port)";
    case "connection-refused":
      return "connection refused";
    case "connection-timeout":
      return "connection timed out";
    case "connection-read-timeout":
      return "timed out reading the response";
    case "connection-write-timeout":
      return "timed out sending the request";
    case "dns-error":
      return `DNS lookup failed${val && val.rcode ? " (" + val.rcode + ")" : ""}`;
    case "dns-timeout":
      return "DNS lookup timed out";
    case "tls-certificate-error":
    case "tls-protocol-error":
    case "tls-alert-received":
      return `TLS error (${tag})`;
    case "internal-error":
      return `internal error${val ? ": " + val : ""}`;
    default: {
      let detail = "";
      if (val !== undefined && val !== null) {
        try {
          detail = ": " + JSON.stringify(val);
        } catch (_) {
          detail = "";
        }
      }
      return tag + detail;
    }
  }
}

// Transport trouble is transient (retried with backoff), except a refused grant
// and malformed requests, which a retry cannot fix.
function transportError(what, code) {
  const tag = String((payload(code) || {}).tag || "").toLowerCase();
  const msg = `${what}: ${describeErrorCode(code)}`;
  if (tag === "http-request-denied" || tag === "http-request-uri-invalid" || tag === "http-request-method-invalid") return failed(msg);
  return unavailable(msg);
}

function toFieldList(headers) {
  const list = [];
  const entries = Array.isArray(headers) ? headers : Object.entries(headers || {});
  for (const [k, v] of entries) for (const one of Array.isArray(v) ? v : [v]) list.push([String(k).toLowerCase(), utf8.encode(String(one))]);
  return list;
}

function optionalU64(setter, ms) {
  // Durations are u64 nanoseconds: a BigInt in SpiderMonkey, a number in QuickJS.
  const ns = Math.round(ms * 1e6);
  try {
    setter(BigInt(ns));
  } catch (_) {
    setter(ns);
  }
}

/** A response: status, headers (lower-case names; repeated ones joined by ", "), body bytes. */
export class Response {
  constructor(status, headers, body, what) {
    this.status = status;
    this.headers = headers;
    this.body = body;
    this.ok = status >= 200 && status < 300;
    this.what = what;
  }
  text() {
    return utf8.decode(this.body);
  }
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw failed(`${this.what}: the response is not JSON (${e.message}): ${this.text().slice(0, 200)}`);
    }
  }
  /** Throws `unavailable` (429, 5xx) or `failed` (other non-2xx) with the status and the start of the body. */
  check() {
    if (this.ok) return this;
    const msg = `${this.what}: HTTP ${this.status}: ${this.text().slice(0, 300)}`;
    throw this.status === 429 || this.status >= 500 ? unavailable(msg) : failed(msg);
  }
}

/**
 * One blocking request: `{ method, url, headers, body, timeoutMs }`. The body
 * may be bytes or a string; returns a Response for any HTTP status (see
 * `check()`), throws a StageError for transport failures.
 */
export function request({ method = "GET", url, headers = {}, body, timeoutMs } = {}) {
  const u = parseUrl(url);
  const what = `${method.toUpperCase()} ${u.scheme}://${u.authority}${u.pathWithQuery}`;
  const data = body === undefined || body === null ? null : body instanceof Uint8Array ? body : utf8.encode(String(body));
  const list = toFieldList(headers);
  // A known length instead of chunked encoding: simple servers need it.
  if (data && !list.some(([k]) => k === "content-length")) list.push(["content-length", utf8.encode(String(data.length))]);
  let fields;
  try {
    fields = Fields.fromList(list);
  } catch (e) {
    throw invalidInput(`${what}: bad request header: ${describeErrorCode(e)}`);
  }
  const req = new OutgoingRequest(fields);
  const m = method.toLowerCase();
  req.setMethod(METHODS.includes(m) ? { tag: m } : { tag: "other", val: method });
  req.setScheme({ tag: u.scheme === "https" ? "HTTPS" : "HTTP" });
  req.setAuthority(u.authority);
  req.setPathWithQuery(u.pathWithQuery);
  let options;
  if (timeoutMs !== undefined) {
    options = new RequestOptions();
    optionalU64((v) => options.setConnectTimeout(v), timeoutMs);
    optionalU64((v) => options.setFirstByteTimeout(v), timeoutMs);
    optionalU64((v) => options.setBetweenBytesTimeout(v), timeoutMs);
  }
  const outBody = req.body();
  let future;
  try {
    // Hand the request over first: until then nothing drains the body, and a
    // body over the stream's buffer would block its write forever.
    future = handle(req, options);
  } catch (e) {
    throw transportError(what, e);
  }
  if (data && data.length) {
    const stream = outBody.write();
    try {
      // blocking-write-and-flush takes at most 4096 bytes per call.
      for (let i = 0; i < data.length; i += 4096) stream.blockingWriteAndFlush(data.subarray(i, i + 4096));
    } catch (e) {
      throw unavailable(`${what}: sending the body failed: ${describeErrorCode(e)}`);
    }
    drop(stream); // the stream must go before the body is finished
  }
  OutgoingBody.finish(outBody, undefined);
  const pollable = future.subscribe();
  pollable.block();
  drop(pollable);
  // option<result<result<incoming-response, error-code>>>: each engine's shape.
  const got = future.get();
  if (got === undefined || got === null) throw failed(`${what}: no response after waiting for it`);
  const outer = got.tag !== undefined ? got : { tag: "ok", val: got };
  if (outer.tag === "err") throw failed(`${what}: the response was already taken`);
  const inner = outer.val && outer.val.tag !== undefined ? outer.val : { tag: "ok", val: outer.val };
  if (inner.tag === "err") throw transportError(what, inner.val);
  const resp = inner.val;
  const status = resp.status();
  const hdrs = {};
  const fieldsIn = resp.headers();
  for (const [k, v] of fieldsIn.entries()) hdrs[k] = hdrs[k] === undefined ? utf8.decode(v) : hdrs[k] + ", " + utf8.decode(v);
  drop(fieldsIn);
  const incoming = resp.consume();
  const stream = incoming.stream();
  const chunks = [];
  let total = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536);
    } catch (e) {
      const p = payload(e);
      if (p && p.tag === "closed") break;
      throw unavailable(`${what}: reading the response failed: ${describeErrorCode(p)}`);
    }
    chunks.push(chunk);
    total += chunk.length;
  }
  drop(stream);
  const bodyBytes = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    bodyBytes.set(c, o);
    o += c.length;
  }
  return new Response(status, hdrs, bodyBytes, what);
}

export const http = {
  request,
  get: (url, opts = {}) => request(Object.assign({}, opts, { method: "GET", url })),
  post: (url, body, opts = {}) => request(Object.assign({}, opts, { method: "POST", url, body })),
  /** POSTs `value` as JSON and returns the Response (call `.check().json()`). */
  postJson: (url, value, opts = {}) =>
    request(Object.assign({}, opts, { method: "POST", url, body: JSON.stringify(value), headers: Object.assign({ "content-type": "application/json", accept: "application/json" }, opts.headers || {}) })),
};

export { StageError };
