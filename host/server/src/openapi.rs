//! `GET /v1/openapi.json`: an OpenAPI 3.1 document of the routes, built
//! from [`ROUTES`], the same table the tests check the router against.

use serde_json::{json, Map, Value};

/// (method, path, summary, admin) for every route the server answers.
pub const ROUTES: &[(&str, &str, &str, bool)] = &[
    (
        "post",
        "/v1/stages/{name}/invoke",
        "Run one stage synchronously (raw body or multipart; params as JSON in ?params=)",
        false,
    ),
    ("get", "/v1/stages", "Stages with their versions and what they describe themselves as", false),
    (
        "put",
        "/v1/stages/{name}",
        "Upload a new component version (compiled and validated before it takes traffic)",
        true,
    ),
    ("post", "/v1/stages/{name}/rollback", "Go back to the previous version of a stage", true),
    ("get", "/v1/artifacts/{digest}", "An artifact by its sha256", false),
    ("post", "/v1/pipelines/run", "Run a pipeline (YAML or JSON) as a durable job: 202 with the job id", false),
    ("get", "/v1/jobs/{id}", "A job's state, per-step results, timings and artifact links", false),
    ("delete", "/v1/jobs/{id}", "Cancel a job", false),
    ("get", "/v1/jobs/{id}/events", "Server-sent events of a job, past ones first", false),
    (
        "get",
        "/v1/status/queue",
        "Queue size, running tasks, workers, per-stage pools; with serve --redis, the cluster's queue and workers",
        false,
    ),
    ("get", "/v1/status/stream", "The live status the console draws, as server-sent events (one a second)", false),
    ("get", "/v1/jobs", "The newest jobs (?limit=, 50 by default), newest first", false),
    ("post", "/v1/pipelines/validate", "Check a pipeline without running it: its steps, or the diagnostics", false),
    ("get", "/", "The operator console (a web page)", false),
    ("get", "/console/{file}", "The console's script and style", false),
    ("get", "/healthz", "Liveness", false),
    ("get", "/readyz", "Readiness", false),
    ("get", "/metrics", "Prometheus metrics", false),
    ("get", "/v1/openapi.json", "This document", false),
];

pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, admin) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                "default": { "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
        if *admin {
            op["security"] = json!([{ "bearer": [] }]);
        }
        let ok = match (*method, *path) {
            ("post", "/v1/pipelines/run") => "202",
            _ => "200",
        };
        op["responses"][ok] = json!({ "description": "Success" });
        if *path == "/v1/pipelines/run" {
            op["parameters"].as_array_mut().unwrap().push(json!({
                "name": "priority", "in": "query", "required": false,
                "schema": { "type": "string", "enum": ["high", "normal", "low"] },
                "description": "With serve --redis: the job's band in the cluster's queue (normal by default)"
            }));
            op["parameters"].as_array_mut().unwrap().push(json!({
                "name": "input", "in": "query", "required": false, "schema": { "type": "string" },
                "description": "Text input, {{input}} in params, when the body does not carry one"
            }));
        }
        if *path == "/v1/stages/{name}/invoke" {
            op["parameters"].as_array_mut().unwrap().push(json!({
                "name": "params", "in": "query", "required": false, "schema": { "type": "string" },
                "description": "Stage parameters as a JSON object"
            }));
            op["parameters"].as_array_mut().unwrap().push(json!({
                "name": "timeout", "in": "query", "required": false, "schema": { "type": "number" },
                "description": "Deadline for this invocation, in seconds"
            }));
            op["parameters"].as_array_mut().unwrap().push(json!({
                "name": "name", "in": "query", "required": false, "schema": { "type": "string" },
                "description": "Artifact name for a raw body"
            }));
            op["parameters"].as_array_mut().unwrap().push(json!({
                "name": "cache", "in": "query", "required": false, "schema": { "type": "boolean" },
                "description": "true: reuse a kept answer even for a stage that is not a pure function (it calls out over HTTP, or declares itself non-deterministic); false: never reuse"
            }));
            op["parameters"].as_array_mut().unwrap().push(json!({
                "name": "Accept", "in": "header", "required": false, "schema": { "type": "string" },
                "description": "multipart/mixed, multipart/form-data or multipart/* for the artifacts in the body; JSON with links otherwise"
            }));
            op["parameters"].as_array_mut().unwrap().push(json!({
                "name": "Cache-Control", "in": "header", "required": false, "schema": { "type": "string" },
                "description": "no-cache: run the stage even if the same version answered the same input before (and keep the answer); no-store: run it and keep nothing"
            }));
            op["responses"]["200"] = json!({
                "description": "The stage's answer: JSON with links to the artifacts, or (Accept: multipart/*) a JSON part named report followed by one part per artifact with its media type and file name",
                "headers": {
                    "x-stagecraft-version": { "schema": { "type": "string" } },
                    "x-stagecraft-digest": { "schema": { "type": "string" } },
                    "x-stagecraft-cache": { "schema": { "type": "string", "enum": ["hit", "miss", "off"] }, "description": "hit: answered from memory without running; miss: ran and kept; off: ran, nothing kept" },
                    "x-stagecraft-cache-reason": { "schema": { "type": "string" }, "description": "Why the cache was off (a stage that calls out over HTTP, a caller's or an operator's choice)" }
                },
                "content": {
                    "application/json": { "schema": { "$ref": "#/components/schemas/Invocation" } },
                    "multipart/mixed": { "schema": { "type": "string", "format": "binary" } },
                    "multipart/form-data": { "schema": { "type": "string", "format": "binary" } }
                }
            });
            op["responses"]["429"] = json!({ "description": "Queue full; see Retry-After" });
        }
        if *path == "/v1/artifacts/{digest}" {
            op["responses"]["200"] = json!({
                "description": "The artifact's bytes, with the media type it was produced with (application/octet-stream when unknown)",
                "headers": { "Content-Disposition": { "schema": { "type": "string" }, "description": "attachment, with the artifact's file name when known" } },
                "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } }
            });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "stagecraft", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Invocation": {
                    "type": "object",
                    "required": ["stage", "version", "digest", "artifacts", "metadata"],
                    "properties": {
                        "stage": { "type": "string" },
                        "version": { "type": "string" },
                        "digest": { "type": "string" },
                        "artifacts": { "type": "array", "items": {
                            "type": "object",
                            "required": ["name", "media_type", "bytes"],
                            "properties": {
                                "name": { "type": "string" },
                                "media_type": { "type": "string" },
                                "bytes": { "type": "integer" },
                                "sha256": { "type": "string", "description": "JSON answers only" },
                                "url": { "type": "string", "description": "JSON answers only: GET it for the bytes" },
                                "part": { "type": "integer", "description": "multipart answers only: the artifact's part (the report is part 0)" }
                            }
                        } },
                        "metadata": {}
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": { "code": { "type": "string" }, "message": { "type": "string" }, "details": {} }
                    } }
                }
            }
        }
    })
}
