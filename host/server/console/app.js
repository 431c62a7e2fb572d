// The stagecraft operator console: plain DOM, no library, no build step.
// Everything the server sends is put in the page as text (never as HTML),
// so a stage name, an error or an artifact cannot inject markup.
"use strict";

// ---- small helpers -------------------------------------------------------

/** An element with attributes (`on*` keys are listeners) and children. */
function h(tag, attrs, ...children) {
  const el = document.createElementNS(tag === "svg" || tag === "polyline" || tag === "rect" ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    // Through the CSSOM: the policy refuses inline style attributes.
    else if (k === "style") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel) => document.querySelector(sel);
/** Replaces `el`'s children, skipping the absent ones (null, false). */
const put = (el, ...kids) => el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
const main = () => $("#main");
const fmtSecs = (s) => (s === null || s === undefined ? "–" : s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`);
const fmtBytes = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–");

/** The admin token, kept in this tab's session storage only. */
const token = {
  get: () => sessionStorage.getItem("stagecraft-admin-token") || "",
  set: (t) => (t ? sessionStorage.setItem("stagecraft-admin-token", t) : sessionStorage.removeItem("stagecraft-admin-token")),
};

/** Calls the API; the answer as {ok, status, json, text}. */
async function api(method, path, { body, type, admin, accept } = {}) {
  const headers = {};
  if (type) headers["content-type"] = type;
  if (accept) headers["accept"] = accept;
  if (admin && token.get()) headers["authorization"] = `Bearer ${token.get()}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body });
  } catch (e) {
    return { ok: false, status: 0, json: null, text: `the server did not answer: ${e}` };
  }
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  return { ok: res.ok, status: res.status, json, text };
}

/** One line saying what the server answered. */
function answerLine(r) {
  if (r.ok) return `${r.status} OK`;
  const e = r.json && r.json.error;
  return e ? `${r.status} ${e.code}: ${e.message}` : `${r.status} ${r.text.slice(0, 300)}`;
}

// ---- the live status stream (one per page, never polled) -----------------

const live = { last: null, history: [], listeners: new Set(), source: null };

function connectStatus() {
  const source = new EventSource("/v1/status/stream");
  live.source = source;
  source.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    const prev = live.last;
    if (prev) {
      const dt = Math.max(1e-3, s.at - prev.at);
      const calls = s.totals.stage_calls - prev.totals.stage_calls;
      const secs = s.totals.stage_seconds - prev.totals.stage_seconds;
      live.history.push({ rate: calls / dt, latency: calls > 0 ? secs / calls : null, rejected: s.totals.rejected - prev.totals.rejected });
      if (live.history.length > 60) live.history.shift();
    }
    live.last = s;
    const el = $("#live");
    el.textContent = "live";
    el.className = "live on";
    for (const f of live.listeners) f(s);
  });
  source.onerror = () => {
    const el = $("#live");
    el.textContent = "reconnecting";
    el.className = "live off";
  };
}

// ---- pages ---------------------------------------------------------------

let leavePage = () => {};

function route() {
  leavePage();
  leavePage = () => {};
  live.listeners.clear();
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").filter(Boolean);
  let page = "overview";
  if (parts[0] === "jobs" && parts[1]) { page = "jobs"; jobPage(decodeURIComponent(parts[1])); }
  else if (parts[0] === "jobs") { page = "jobs"; jobsPage(); }
  else if (parts[0] === "stages") { page = "stages"; stagesPage(); }
  else if (parts[0] === "submit") { page = "submit"; submitPage(); }
  else overviewPage();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  document.body.dataset.page = page;
}

/** Slots as boxes: `busy` filled, `parked` hatched, the rest free. */
function slotBoxes(total, busy, parked, label) {
  const boxes = [];
  // A pool of hundreds is drawn as its busy slots and a count of the rest.
  const drawn = Math.min(total, Math.max(24, busy + parked));
  for (let i = 0; i < drawn; i++) {
    const state = i < busy ? "busy" : i < busy + parked ? "parked" : "free";
    boxes.push(h("span", { class: `slot ${state}`, title: `${label}: slot ${i + 1} ${state}` }));
  }
  const rest = total > drawn ? h("span", { class: "muted" }, ` +${total - drawn} free`) : null;
  return h("span", { class: "slots", "data-busy": busy, "data-parked": parked, "data-total": total }, boxes, rest);
}

/** A sparkline of `values` (nulls are gaps drawn as zero). */
function sparkline(values, label) {
  const w = 240, hgt = 40;
  const max = Math.max(1e-9, ...values.map((v) => v || 0));
  const points = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * w},${hgt - ((v || 0) / max) * (hgt - 2) - 1}`).join(" ");
  return h("svg", { class: "spark", viewBox: `0 0 ${w} ${hgt}`, width: w, height: hgt, role: "img", "aria-label": label },
    h("polyline", { points, fill: "none", stroke: "currentColor", "stroke-width": "1.5" }));
}

function overviewPage() {
  const root = h("section", { id: "overview" }, h("h1", {}, "Overview"), h("p", { class: "muted" }, "waiting for the live status…"));
  put(main(), root);
  let stages = [];
  api("GET", "/v1/stages").then((r) => { if (r.ok) { stages = r.json.stages; if (live.last) draw(live.last); } });
  const draw = (s) => {
    const byName = new Map((s.stages || []).map((p) => [p.name, p]));
    const cap = s.capacity || {};
    const names = [...new Set([...stages.map((x) => x.name), ...byName.keys()])].sort();
    const stageRows = names.map((name) => {
      const pool = byName.get(name);
      const version = (stages.find((x) => x.name === name) || {}).version || "";
      return h("tr", { "data-stage": name },
        h("td", {}, name), h("td", { class: "muted" }, version),
        h("td", {}, pool ? slotBoxes(pool.limit, pool.slots_in_use, 0, name) : h("span", { class: "muted" }, "idle (no pool yet)")),
        h("td", { class: "num" }, pool ? pool.queued : 0),
        h("td", { class: "num" }, pool ? pool.completed : 0),
        h("td", { class: "num" }, pool ? pool.failed : 0));
    });
    const hist = live.history;
    const rejected = s.totals.rejected;
    const dev = s.device || {};
    const seg = dev.segmentation || {};
    const mem = dev.gpu_memory;
    const models = (s.models || []).map((m) => h("tr", {},
      h("td", {}, m.name), h("td", {}, m.engine_kind || ""), h("td", { class: "muted" }, m.engine || ""),
      h("td", { class: "num" }, m.max_batch ?? ""), h("td", { class: "num" }, m.gpu_batches ?? 0), h("td", { class: "num" }, m.gpu_fallbacks ?? 0)));
    const jobs = s.jobs || {};
    put(root, 
      h("h1", {}, "Overview"),
      h("div", { class: "cards" },
        h("div", { class: "card", id: "queue-card" },
          h("h2", {}, "Queue"),
          h("p", {}, h("b", { id: "queue-size" }, s.queue_size), ` queued of ${s.max_queue_size}; `,
            h("b", { id: "running-tasks" }, s.running_tasks), ` in flight of ${s.max_workers}`),
          h("p", {}, "429s since start: ", h("b", { id: "rejected" }, rejected)),
          h("p", {}, "jobs: ", Object.entries(jobs).map(([k, v]) => `${k} ${v}`).join(", ") || "none")),
        h("div", { class: "card", id: "cpu-card" },
          h("h2", {}, "CPU slots"),
          slotBoxes(cap.cpu_slots || 0, cap.cpu_busy || 0, 0, "cpu"),
          h("p", {}, `${cap.cpu_busy || 0} computing, ${cap.cpu_queued || 0} waiting for a slot`),
          h("p", {}, "parked (waiting, holding no core): ", h("b", { id: "parked" }, cap.parked_total || 0),
            " ", Object.entries(cap.parked || {}).map(([k, v]) => `${k} ${v}`).join(", "))),
        h("div", { class: "card" },
          h("h2", {}, "Throughput"),
          sparkline(hist.map((x) => x.rate), "stage calls per second"),
          h("p", {}, `${hist.length ? hist[hist.length - 1].rate.toFixed(1) : "0.0"} calls/s`)),
        h("div", { class: "card" },
          h("h2", {}, "Latency"),
          sparkline(hist.map((x) => x.latency), "mean stage call latency"),
          h("p", {}, `mean ${fmtSecs(hist.length ? hist[hist.length - 1].latency : null)}`)),
        h("div", { class: "card", id: "device-card" },
          h("h2", {}, "Device"),
          h("p", {}, h("b", {}, seg.device || "unavailable"), " ", h("span", { class: "muted" }, seg.summary || "")),
          h("p", {}, "GPU breaker: ", h("b", { id: "breaker" }, (dev.breaker || {}).state || "–")),
          mem ? h("p", {}, "GPU memory: ", h("meter", { min: 0, max: mem.total_bytes, value: mem.used_bytes }), ` ${fmtBytes(mem.used_bytes)} of ${fmtBytes(mem.total_bytes)}`)
              : h("p", { class: "muted" }, "no GPU memory in use (CPU)"))),
      h("h2", {}, "Stages"),
      h("table", { id: "stage-table" },
        h("thead", {}, h("tr", {}, ["stage", "version", "slots", "queued", "done", "failed"].map((t) => h("th", {}, t)))),
        h("tbody", {}, stageRows)),
      h("h2", {}, "Models"),
      models.length ? h("table", { id: "model-table" },
        h("thead", {}, h("tr", {}, ["model", "engine", "runs on", "max batch", "GPU batches", "GPU fallbacks"].map((t) => h("th", {}, t)))),
        h("tbody", {}, models)) : h("p", { class: "muted" }, "no model repository"));
  };
  live.listeners.add(draw);
  if (live.last) draw(live.last);
}

function stateBadge(state) {
  return h("span", { class: `badge ${state}` }, state);
}

function jobsPage() {
  const root = h("section", { id: "jobs" }, h("h1", {}, "Jobs"));
  put(main(), root);
  let seen = "";
  const load = async () => {
    const r = await api("GET", "/v1/jobs?limit=100");
    if (!r.ok) { put(root, h("h1", {}, "Jobs"), h("p", { class: "error" }, answerLine(r))); return; }
    const rows = r.json.jobs.map((j) => h("tr", { "data-job": j.id },
      h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.id.slice(0, 12))),
      h("td", {}, j.file), h("td", {}, stateBadge(j.state)),
      h("td", {}, fmtTime(j.created_at)),
      h("td", { class: "num" }, j.finished_at && j.started_at ? fmtSecs(j.finished_at - j.started_at) : j.started_at ? "running" : "–"),
      h("td", { class: "error" }, j.error || "")));
    put(root, h("h1", {}, "Jobs"),
      rows.length ? h("table", { id: "job-table" },
        h("thead", {}, h("tr", {}, ["job", "pipeline", "state", "submitted", "duration", "error"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows)) : h("p", { class: "muted" }, "no jobs yet: submit one"));
  };
  // Reload when the job counts move (the status stream says so), not on a timer.
  live.listeners.add((s) => { const key = JSON.stringify(s.jobs); if (key !== seen) { seen = key; load(); } });
  load();
}

/** A job: its steps on a timeline, live while it runs, then its report. */
function jobPage(id) {
  const root = h("section", { id: "job", "data-job": id }, h("h1", {}, `Job ${id.slice(0, 12)}`));
  put(main(), root);
  const steps = new Map(); // name -> {stage, queued, started, finished, status, progress, attempts, error}
  let job = null;
  let source = null;
  const step = (name) => { if (!steps.has(name)) steps.set(name, { name, attempts: 0, progress: null }); return steps.get(name); };
  const onEvent = (e) => {
    const ev = JSON.parse(e.data);
    if (!ev.step) return;
    const s = step(ev.step);
    switch (ev.event) {
      case "queued": s.queued = ev.at; s.status = s.status || "queued"; break;
      case "started": s.started = ev.at; s.stage = ev.stage; s.status = "running"; break;
      case "finished": s.finished = ev.at; s.status = "succeeded"; s.progress = 1; break;
      case "failed": s.finished = ev.at; s.status = ev.timed_out ? "timed_out" : "failed"; s.error = ev.error; break;
      case "skipped": s.finished = ev.at; s.status = "skipped"; s.error = ev.reason; break;
      case "cancelled": s.finished = ev.at; s.status = "cancelled"; s.error = ev.reason; break;
      case "progress": s.progress = ev.fraction; s.message = ev.message; break;
      case "attempt_failed": s.attempts = Math.max(s.attempts, ev.attempt); s.retryError = ev.error; break;
      default: break;
    }
    draw();
  };
  const load = async () => {
    const r = await api("GET", `/v1/jobs/${encodeURIComponent(id)}`);
    if (!r.ok) { put(root, h("h1", {}, "Job"), h("p", { class: "error" }, answerLine(r))); return; }
    job = r.json;
    for (const sr of (job.report && job.report.steps) || []) {
      const s = step(sr.name);
      Object.assign(s, { stage: sr.stage, queued: sr.queued, started: sr.started, finished: sr.finished, status: sr.status, error: sr.error, retryable: sr.retryable, depends_on: sr.depends_on, artifacts: sr.artifacts || [], cached: !!(sr.execution && sr.execution.cache_hit), attempts: (sr.execution && sr.execution.attempts) || s.attempts });
    }
    draw();
    if (!source && !["succeeded", "failed", "cancelled"].includes(job.state)) {
      source = new EventSource(`/v1/jobs/${encodeURIComponent(id)}/events`);
      for (const kind of ["queued", "started", "finished", "failed", "skipped", "cancelled", "progress", "attempt_failed", "log"]) source.addEventListener(kind, onEvent);
      const ended = () => { if (source) { source.close(); source = null; } setTimeout(load, 100); };
      source.addEventListener("job_finished", ended);
      source.addEventListener("run_finished", onEvent);
      source.onerror = () => { if (source && source.readyState === EventSource.CLOSED) ended(); };
    }
  };
  leavePage = () => { if (source) source.close(); };
  const draw = () => {
    const all = [...steps.values()];
    const end = Math.max(0.001, ...all.map((s) => s.finished ?? s.started ?? s.queued ?? 0));
    const critical = new Set((job && job.report && job.report.critical_path) || []);
    const pct = (t) => `${((t / end) * 100).toFixed(2)}%`;
    const rows = all.map((s) => {
      const q = s.queued ?? s.started ?? 0, st = s.started ?? s.finished ?? q, fin = s.finished ?? (s.status === "running" ? end : st);
      const bar = h("div", { class: "lane" },
        h("div", { class: "wait", style: { left: pct(q), width: pct(Math.max(0, st - q)) }, title: `queued ${fmtSecs(st - q)}` }),
        h("div", { class: `run ${s.status || "queued"}${s.cached ? " cached" : ""}`, style: { left: pct(st), width: pct(Math.max(end / 200, fin - st)) }, title: `ran ${fmtSecs(fin - st)}` }));
      return h("tr", { "data-step": s.name, "data-status": s.status || "queued", class: critical.has(s.name) ? "critical" : "" },
        h("td", {}, s.name, critical.has(s.name) ? h("span", { class: "tag", title: "on the critical path" }, "critical") : null),
        h("td", { class: "muted" }, s.stage || ""),
        h("td", {}, stateBadge(s.status || "queued"), s.cached ? h("span", { class: "tag" }, "cached") : null, s.attempts > 1 ? h("span", { class: "tag", title: s.retryError || "" }, `retried ×${s.attempts - 1}`) : null),
        h("td", { class: "timeline" }, bar),
        h("td", {}, s.progress !== null && s.status === "running" ? h("progress", { max: 1, value: s.progress, title: s.message || "" }) : fmtSecs(s.finished !== undefined && s.started !== undefined ? s.finished - s.started : null)));
    });
    const errors = all.filter((s) => s.error).map((s) => h("li", { "data-step": s.name }, h("b", {}, `${s.name} (${s.status}${s.retryable ? ", retryable" : ""}): `), s.error));
    const artifacts = all.flatMap((s) => (s.artifacts || []).map((a) => h("figure", { class: "artifact" },
      a.media_type.startsWith("image/") && a.media_type !== "image/svg+xml" ? h("img", { src: a.url, alt: a.name, loading: "lazy" }) : h("div", { class: "file" }, a.media_type),
      h("figcaption", {}, h("a", { href: a.url, download: a.name }, a.name), ` ${fmtBytes(a.bytes)} · ${s.name}`))));
    const state = job ? job.state : "…";
    put(root, 
      h("h1", {}, `Job ${id.slice(0, 12)} `, h("span", { id: "job-state" }, stateBadge(state))),
      h("p", { class: "muted" }, job ? `${job.file} · submitted ${fmtTime(job.created_at)}${job.finished_at && job.started_at ? ` · ran ${fmtSecs(job.finished_at - job.started_at)}` : ""}` : ""),
      job && ["queued", "running"].includes(job.state) ? h("button", { id: "cancel", onclick: async () => { const r = await api("DELETE", `/v1/jobs/${encodeURIComponent(id)}`); $("#cancel-answer").textContent = answerLine(r); } }, "Cancel") : null,
      h("span", { id: "cancel-answer" }),
      job && job.error ? h("p", { class: "error", id: "job-error" }, job.error) : null,
      h("table", { id: "timeline" }, h("thead", {}, h("tr", {}, ["step", "stage", "state", `timeline (0 – ${fmtSecs(end)})`, "time"].map((t) => h("th", {}, t)))), h("tbody", {}, rows)),
      errors.length ? h("div", {}, h("h2", {}, "Errors"), h("ul", { id: "errors" }, errors)) : null,
      artifacts.length ? h("div", {}, h("h2", {}, "Artifacts"), h("div", { id: "artifacts", class: "artifacts" }, artifacts)) : null,
      job && job.report ? h("details", {}, h("summary", {}, "Run report (JSON)"), h("pre", { id: "report" }, JSON.stringify(job.report, null, 2))) : null);
  };
  load();
}

/** A form for a params schema: one input per top-level property. */
function paramsForm(schema) {
  const props = (schema && schema.properties) || {};
  const fields = Object.entries(props).map(([name, p]) => {
    const type = Array.isArray(p.type) ? p.type.find((t) => t !== "null") : p.type;
    let input;
    if (Array.isArray(p.enum)) input = h("select", { name }, h("option", { value: "" }, "(default)"), p.enum.map((v) => h("option", { value: JSON.stringify(v) }, String(v))));
    else if (type === "boolean") input = h("select", { name }, ["", "true", "false"].map((v) => h("option", { value: v }, v || "(default)")));
    else if (type === "number" || type === "integer") input = h("input", { name, type: "number", step: type === "integer" ? "1" : "any", min: p.minimum, max: p.maximum, placeholder: p.default !== undefined ? String(p.default) : "" });
    else if (type === "string") input = h("input", { name, type: "text", placeholder: p.default !== undefined ? String(p.default) : "" });
    else input = h("input", { name, type: "text", "data-json": "1", placeholder: "JSON" });
    input.dataset.type = type || "json";
    return h("label", { class: "field" }, h("span", {}, name, (schema.required || []).includes(name) ? " *" : ""), input, p.description ? h("small", { class: "muted" }, p.description) : null);
  });
  return fields;
}

function readParams(form) {
  const params = {};
  for (const el of form.querySelectorAll("[name]")) {
    if (el.type === "file" || el.value === "") continue;
    const t = el.dataset.type;
    if (el.tagName === "SELECT") params[el.name] = t === "boolean" ? el.value === "true" : JSON.parse(el.value);
    else if (t === "number" || t === "integer") params[el.name] = Number(el.value);
    else if (t === "string") params[el.name] = el.value;
    else params[el.name] = JSON.parse(el.value);
  }
  return params;
}

function stagesPage() {
  const root = h("section", { id: "stages" }, h("h1", {}, "Stages"));
  put(main(), root);
  const load = async () => {
    const r = await api("GET", "/v1/stages");
    if (!r.ok) { put(root, h("h1", {}, "Stages"), h("p", { class: "error" }, answerLine(r))); return; }
    const upload = h("input", { type: "file", id: "component-file", accept: ".wasm,application/wasm" });
    const uploadAnswer = h("output", { id: "admin-answer" });
    const cards = r.json.stages.map((s) => {
      const answer = h("div", { class: "answer" });
      const file = h("input", { type: "file", name: "__input" });
      const form = h("form", { class: "try", onsubmit: async (e) => {
        e.preventDefault();
        let params;
        try { params = readParams(form); } catch (err) { put(answer, h("p", { class: "error" }, `params: ${err}`)); return; }
        const f = file.files[0];
        const body = f ? await f.arrayBuffer() : new ArrayBuffer(0);
        const q = Object.keys(params).length ? `?params=${encodeURIComponent(JSON.stringify(params))}` : "";
        const res = await api("POST", `/v1/stages/${encodeURIComponent(s.name)}/invoke${q}`, { body, type: (f && f.type) || "application/octet-stream", accept: "application/json" });
        const links = (res.json && res.json.artifacts) || [];
        put(answer, h("p", { class: res.ok ? "ok" : "error" }, answerLine(res)),
          h("div", { class: "artifacts" }, links.map((a) => h("figure", { class: "artifact" },
            a.media_type.startsWith("image/") && a.media_type !== "image/svg+xml" ? h("img", { src: a.url, alt: a.name }) : h("div", { class: "file" }, a.media_type),
            h("figcaption", {}, h("a", { href: a.url, download: a.name }, a.name), ` ${fmtBytes(a.bytes)}`)))),
          res.json && res.json.metadata ? h("pre", {}, JSON.stringify(res.json.metadata, null, 2)) : null);
      } }, paramsForm(s.params_schema), h("label", { class: "field" }, h("span", {}, "input file"), file), h("button", { type: "submit" }, "Invoke"));
      const rollback = h("button", { class: "rollback", onclick: async () => {
        const res = await api("POST", `/v1/stages/${encodeURIComponent(s.name)}/rollback`, { admin: true });
        uploadAnswer.textContent = `rollback ${s.name}: ${answerLine(res)}`;
        if (res.ok) load();
      } }, "Roll back");
      return h("article", { class: "stage card", "data-stage": s.name, "data-version": s.version, "data-digest": s.digest },
        h("h2", {}, s.name, " ", h("span", { class: "version" }, s.version)),
        h("p", {}, s.description || ""),
        h("p", { class: "muted" }, `digest ${s.digest.slice(0, 12)} · ${s.origin} · accepts ${(s.accepts || []).join(", ") || "anything"} · produces ${(s.produces || []).join(", ") || "?"}`),
        (s.previous || []).length ? h("p", { class: "muted" }, "previous: ", s.previous.map((p) => `${p.version} (${p.digest.slice(0, 12)})`).join(", "), " ", rollback) : h("p", { class: "muted" }, "no previous version"),
        h("details", {}, h("summary", {}, "Try it"), form, answer),
        h("details", {}, h("summary", {}, "Params schema"), h("pre", {}, JSON.stringify(s.params_schema, null, 2))));
    });
    put(root, h("h1", {}, "Stages"),
      h("div", { class: "card admin" }, h("h2", {}, "Upload a component version"),
        h("p", { class: "muted" }, "Needs the admin token (top right). The server compiles and checks it before it takes traffic."),
        upload, h("button", { id: "upload", onclick: async () => {
          const f = upload.files[0];
          if (!f) { uploadAnswer.textContent = "choose a NAME.wasm file first"; return; }
          const name = f.name.replace(/\.wasm$/, "");
          uploadAnswer.textContent = `uploading ${name}…`;
          const res = await api("PUT", `/v1/stages/${encodeURIComponent(name)}`, { body: await f.arrayBuffer(), type: "application/wasm", admin: true });
          uploadAnswer.textContent = `upload ${name}: ${answerLine(res)}${res.ok ? ` — now ${res.json.version}` : ""}`;
          if (res.ok) load();
        } }, "Upload"), " ", uploadAnswer),
      ...cards);
  };
  load();
}

function submitPage() {
  const saved = sessionStorage.getItem("stagecraft-draft") || "name: example\nsteps:\n  - name: first\n    type: noop\n";
  const text = h("textarea", { id: "pipeline", rows: 18, spellcheck: "false" });
  text.value = saved;
  const lines = h("ol", { id: "source", class: "source" });
  const out = h("div", { id: "diagnostics" });
  const inputFile = h("input", { type: "file", id: "input-file", multiple: true });
  const yamlFile = h("input", { type: "file", id: "pipeline-file", accept: ".yaml,.yml,.json", onchange: async () => { const f = yamlFile.files[0]; if (f) { text.value = await f.text(); check(); } } });
  const showSource = (bad) => {
    put(lines, ...text.value.split("\n").map((l, i) => h("li", { class: bad.has(i + 1) ? "bad" : "", "data-line": i + 1 }, l || " ")));
  };
  const check = async () => {
    sessionStorage.setItem("stagecraft-draft", text.value);
    const r = await api("POST", "/v1/pipelines/validate", { body: text.value, type: "application/yaml" });
    const diags = (r.json && r.json.error && r.json.error.details && r.json.error.details.diagnostics) || [];
    showSource(new Set(diags.map((d) => d.line)));
    if (r.ok) put(out, h("p", { class: "ok", id: "valid" }, `valid: ${r.json.steps.length} step(s): ${r.json.steps.map((s) => s.name).join(", ")}`));
    else if (diags.length) put(out, h("ul", { class: "error" }, diags.map((d) => h("li", { class: "diagnostic", "data-line": d.line, "data-column": d.column }, `line ${d.line}, column ${d.column}${d.step ? ` (${d.step})` : ""}: ${d.message}`))));
    else put(out, h("p", { class: "error" }, answerLine(r)));
    return r.ok;
  };
  const run = async () => {
    if (!(await check())) return;
    const files = [...inputFile.files];
    let r;
    if (files.length) {
      const form = new FormData();
      form.append("pipeline", text.value);
      for (const f of files) form.append("file", f, f.name);
      r = await api("POST", "/v1/pipelines/run", { body: form });
    } else r = await api("POST", "/v1/pipelines/run", { body: text.value, type: "application/yaml" });
    if (r.ok) location.hash = `#/jobs/${r.json.id}`;
    else put(out, h("p", { class: "error" }, answerLine(r)));
  };
  put(main(), h("section", { id: "submit" }, h("h1", {}, "Submit a pipeline"),
    h("p", {}, "Paste YAML or load a file: ", yamlFile),
    h("div", { class: "editor" }, text, lines),
    h("p", {}, "Input files (optional): ", inputFile),
    h("p", {}, h("button", { id: "validate", onclick: check }, "Validate"), " ", h("button", { id: "run", onclick: run }, "Run")),
    out));
  showSource(new Set());
}

// ---- start ---------------------------------------------------------------

function showTokenState() {
  $("#token-state").textContent = token.get() ? "token kept for this tab" : "no token: admin actions are refused";
}

// A fault in this page is shown, not swallowed: operators report it.
function showFault(message) {
  let el = $("#console-error");
  if (!el) { el = h("p", { id: "console-error", class: "error" }); document.body.prepend(el); }
  el.textContent = `console error: ${message}`;
}
window.addEventListener("error", (e) => showFault(e.message));
window.addEventListener("unhandledrejection", (e) => showFault(String(e.reason && e.reason.stack || e.reason)));

window.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", (e) => { e.preventDefault(); token.set($("#token").value.trim()); $("#token").value = ""; showTokenState(); });
  $("#token-forget").addEventListener("click", () => { token.set(""); showTokenState(); });
  showTokenState();
  window.addEventListener("hashchange", route);
  connectStatus();
  route();
});
