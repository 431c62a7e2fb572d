import { test } from "node:test";
import assert from "node:assert/strict";
import { sdk, witCalls } from "./load.mjs";

const { validate, defineStage, invalidInput, unavailable, toStageError, firstFrame, artifact, Output, matchesMediaType, utf8, log, progress } = sdk;

const schema = {
  type: "object",
  properties: {
    title: { type: "string", minLength: 1, maxLength: 10, default: "Report" },
    format: { enum: ["both", "json", "csv"], default: "both" },
    n: { type: "integer", minimum: 1, maximum: 5 },
    tags: { type: "array", items: { type: "string" }, maxItems: 2 },
    nested: { type: "object", properties: { k: { type: "boolean", default: true } }, additionalProperties: false },
  },
  required: ["n"],
  additionalProperties: false,
};

const rejects = (value, re) => assert.throws(() => validate(schema, value), (e) => e.kind === "invalid-input" && re.test(e.message), `expected ${re}`);

test("validate fills defaults, deep ones too", () => {
  assert.deepEqual(validate(schema, { n: 2, nested: {} }), { n: 2, nested: { k: true }, title: "Report", format: "both" });
});

test("validate names the failing field", () => {
  rejects({}, /^param `n`: required$/);
  rejects({ n: 1.5 }, /param `n`: expected integer, got number 1.5/);
  rejects({ n: 9 }, /param `n`: must be <= 5 \(got 9\)/);
  rejects({ n: 1, format: "xml" }, /param `format`: must be one of "both", "json", "csv" \(got "xml"\)/);
  rejects({ n: 1, title: "" }, /param `title`: must be at least 1 characters/);
  rejects({ n: 1, title: "x".repeat(11) }, /at most 10 characters/);
  rejects({ n: 1, tags: ["a", 2] }, /param `tags\[1\]`: expected string, got integer 2/);
  rejects({ n: 1, tags: ["a", "b", "c"] }, /param `tags`: takes at most 2 items/);
  rejects({ n: 1, colour: "red" }, /unknown field `colour` \(expected `title`, `format`, `n`, `tags`, `nested`\)/);
  rejects({ n: 1, nested: { q: 1 } }, /unknown field `nested.q`/);
  rejects([], /params: expected object, got array/);
});

test("string length counts code points", () => {
  assert.deepEqual(validate({ type: "string", maxLength: 2 }, "😀😀"), "😀😀");
});

test("errors become the WIT variant, exceptions carry name, message and frame", () => {
  assert.deepEqual(toStageError(invalidInput("bad")), { tag: "invalid-input", val: "bad" });
  assert.deepEqual(toStageError(unavailable("busy")), { tag: "unavailable", val: "busy" });
  assert.deepEqual(toStageError({ tag: "failed", val: "x" }), { tag: "failed", val: "x" });
  let e;
  try {
    null.x;
  } catch (err) {
    e = toStageError(err);
  }
  assert.equal(e.tag, "failed");
  assert.match(e.val, /^TypeError: .*null.* \(at .*sdk\.test\.mjs:\d+:\d+\)?/);
  assert.equal(toStageError("oops").val, "uncaught string: oops");
  // Both engines' stack formats.
  assert.equal(firstFrame("run@build.x1/app.js:12:40\n@app.js:1:1\n"), "run@app.js:12:40");
  assert.equal(firstFrame("    at run (/app.js:12:40)\n"), "run (app.js:12:40)");
});

test("defineStage: describe, run with validation, output normalisation", () => {
  const stage = defineStage({
    name: "t",
    version: "1.0.0",
    description: "test",
    params: schema,
    accepts: ["text/*"],
    run(input) {
      log.info("got", input.artifacts.length, { n: input.params.n });
      progress(2, "done");
      const a = input.first("text/*");
      return new Output().artifact("up.txt", "text/plain", input.text(a).toUpperCase()).artifact("m.json", "application/json", { ok: true }).meta("n", input.params.n);
    },
  });
  const info = stage.describe();
  assert.equal(info.name, "t");
  assert.deepEqual(JSON.parse(info.paramsSchema), schema);
  witCalls().length = 0;
  const out = stage.run({ artifacts: [{ name: "a.txt", mediaType: "text/plain", data: utf8.encode("héllo") }], params: '{"n":3}' });
  assert.equal(utf8.decode(out.artifacts[0].data), "HÉLLO");
  assert.deepEqual(JSON.parse(utf8.decode(out.artifacts[1].data)), { ok: true });
  assert.equal(out.metadata, '{"n":3}');
  assert.deepEqual(witCalls(), [["log", "info", 'got 1 {"n":3}'], ["report", 1, "done"]]);
  assert.throws(() => stage.run({ artifacts: [], params: '{"n":3}' }), (e) => e.tag === "invalid-input" && /type text\/\*/.test(e.val));
  assert.throws(() => stage.run({ artifacts: [], params: "{nope" }), (e) => e.tag === "invalid-input" && /not valid JSON/.test(e.val));
  assert.throws(() => stage.run({ artifacts: [], params: '{"n":0}' }), (e) => e.tag === "invalid-input" && e.val === "param `n`: must be >= 1 (got 0)");
});

test("a stage that throws a plain error fails with its message", () => {
  const stage = defineStage({ name: "x", version: "0", run: () => JSON.parse("{") });
  assert.throws(() => stage.run({ artifacts: [], params: "{}" }), (e) => e.tag === "failed" && /^SyntaxError: /.test(e.val));
  const dup = defineStage({ name: "x", version: "0", run: () => ({ artifacts: [artifact("a", "x/y", ""), artifact("a", "x/y", "")] }) });
  assert.throws(() => dup.run({ artifacts: [], params: "{}" }), (e) => e.tag === "failed" && /two output artifacts are named "a"/.test(e.val));
  const det = defineStage({ name: "x", version: "0", deterministic: false, run() {} });
  assert.equal(JSON.parse(det.describe().paramsSchema)["x-stagecraft-deterministic"], false);
  assert.deepEqual(det.run({ artifacts: [], params: "" }), { artifacts: [], metadata: "{}" });
});

test("media type patterns", () => {
  assert.ok(matchesMediaType("image/*", "image/png"));
  assert.ok(matchesMediaType("*/*", "text/csv"));
  assert.ok(matchesMediaType("application/json", "application/json; charset=utf-8"));
  assert.ok(!matchesMediaType("image/*", "imagex/png"));
  assert.ok(!matchesMediaType("image/png", "image/jpeg"));
});
