// report_js: a JSON/CSV report on whatever artifacts it is given (name,
// media type, size; PNG header fields; top-level key count of JSON objects).
// The last stage of the mixed Rust/Python/JS pipeline.
import { defineStage, artifact, png, utf8, log, progress } from "./stagecraft.js";

const COLUMNS = ["name", "media_type", "bytes", "width", "height", "bit_depth", "color_type", "json_keys"];

// One row per artifact; fields that do not apply stay null.
function describeArtifact(a) {
  const row = { name: a.name, media_type: a.mediaType, bytes: a.data.length, width: null, height: null, bit_depth: null, color_type: null, json_keys: null };
  if (png.is(a.data)) {
    const h = png.header(a); // a truncated PNG is invalid-input naming the artifact
    Object.assign(row, { width: h.width, height: h.height, bit_depth: h.bitDepth, color_type: h.colorName });
  } else if (/json/.test(a.mediaType) || a.name.endsWith(".json")) {
    try {
      const v = JSON.parse(utf8.decode(a.data));
      if (v && typeof v === "object" && !Array.isArray(v)) row.json_keys = Object.keys(v).length;
    } catch (_) {
      log.warn(`${a.name}: not valid JSON, reported by size only`);
    }
  }
  return row;
}

function csvField(v) {
  if (v === null || v === undefined) return "";
  const s = String(v);
  return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

export const stage = defineStage({
  name: "report_js",
  version: "0.1.0",
  description: "Reports on its input artifacts as JSON and/or CSV (sizes, PNG headers, JSON key counts)",
  params: {
    type: "object",
    properties: {
      title: { type: "string", minLength: 1, maxLength: 200, default: "Artifact report", description: "Report title" },
      format: { enum: ["both", "json", "csv"], default: "both", description: "Which files to write" },
    },
    additionalProperties: false,
  },
  accepts: ["*/*"],
  produces: ["application/json", "text/csv"],
  run(input) {
    const { title, format } = input.params;
    const rows = input.artifacts.map((a, i) => {
      progress(i / Math.max(1, input.artifacts.length), a.name);
      return describeArtifact(a);
    });
    const totals = {
      artifacts: rows.length,
      bytes: rows.reduce((s, r) => s + r.bytes, 0),
      png: rows.filter((r) => r.width !== null).length,
      pixels: rows.reduce((s, r) => s + (r.width || 0) * (r.height || 0), 0),
      json: rows.filter((r) => r.json_keys !== null).length,
    };
    const artifacts = [];
    if (format !== "csv") artifacts.push(artifact("report.json", "application/json", { title, artifacts: rows, totals }));
    if (format !== "json") {
      const lines = [COLUMNS.join(",")].concat(rows.map((r) => COLUMNS.map((c) => csvField(r[c])).join(",")));
      lines.push(["TOTAL", "", totals.bytes, "", "", "", "", ""].join(","));
      artifacts.push(artifact("report.csv", "text/csv", lines.join("\n") + "\n"));
    }
    progress(1, "done");
    return { artifacts, metadata: { title, ...totals } };
  },
});
