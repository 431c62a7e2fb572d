//! Prometheus text metrics: request counts and latency histograms per
//! route, per-stage invocation durations, plus gauges read at scrape time
//! (queue depth, pool occupancy, instantiations, jobs by state).

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (b, le) in self.buckets.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {b}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// A series computed at scrape time: name, help text, and its samples
/// (labels already rendered, e.g. `stage="noop"`, and the value).
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

/// Counters since start (see [`Metrics::totals`]).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Totals {
    /// Stage invocations finished (synchronous calls and pipeline steps).
    pub stage_calls: u64,
    /// Of those, the ones that failed.
    pub stage_errors: u64,
    /// Their summed duration.
    pub stage_seconds: f64,
    /// Requests refused with 429.
    pub rejected: u64,
}

/// Counters collected while serving.
#[derive(Default)]
pub struct Metrics {
    /// (method, route, status) → count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// (method, route) → latency.
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    /// (stage, outcome) → invocation duration.
    stages: Mutex<BTreeMap<(String, &'static str), Histogram>>,
    /// Requests refused with 429.
    rejected: Mutex<u64>,
    /// Pipeline steps answered from the result cache, and those that ran.
    cache: Mutex<(u64, u64)>,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn record_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let key = (method.to_owned(), route.to_owned());
        *self.requests.lock().unwrap().entry((key.0.clone(), key.1.clone(), status)).or_default() += 1;
        self.latency.lock().unwrap().entry(key).or_default().observe(elapsed.as_secs_f64());
        if status == 429 {
            *self.rejected.lock().unwrap() += 1;
        }
    }

    pub fn record_stage(&self, stage: &str, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.stages.lock().unwrap().entry((stage.to_owned(), outcome)).or_default().observe(elapsed.as_secs_f64());
    }

    /// Counts a pipeline step: answered from the result cache or run.
    pub fn record_step(&self, cache_hit: bool) {
        let mut c = self.cache.lock().unwrap();
        if cache_hit {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
    }

    /// Running totals for the console's live view (it turns them into rates).
    pub fn totals(&self) -> Totals {
        let stages = self.stages.lock().unwrap();
        Totals {
            stage_calls: stages.values().map(|h| h.count).sum(),
            stage_errors: stages.iter().filter(|((_, o), _)| *o == "error").map(|(_, h)| h.count).sum(),
            stage_seconds: stages.values().map(|h| h.sum).sum(),
            rejected: *self.rejected.lock().unwrap(),
        }
    }

    /// The collected series in Prometheus text format (`gauges` are
    /// appended as they are).
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        out.push_str("# HELP stagecraft_http_requests_total HTTP requests by method, route and status.\n");
        out.push_str("# TYPE stagecraft_http_requests_total counter\n");
        for ((method, route, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "stagecraft_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP stagecraft_http_request_duration_seconds HTTP request latency by method and route.\n");
        out.push_str("# TYPE stagecraft_http_request_duration_seconds histogram\n");
        for ((method, route), h) in self.latency.lock().unwrap().iter() {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            h.write(&mut out, "stagecraft_http_request_duration_seconds", &labels);
        }
        out.push_str("# HELP stagecraft_stage_duration_seconds Stage invocation time by stage and outcome.\n");
        out.push_str("# TYPE stagecraft_stage_duration_seconds histogram\n");
        for ((stage, outcome), h) in self.stages.lock().unwrap().iter() {
            let labels = format!("stage=\"{}\",outcome=\"{outcome}\"", escape(stage));
            h.write(&mut out, "stagecraft_stage_duration_seconds", &labels);
        }
        out.push_str("# HELP stagecraft_http_rejected_total Requests refused with 429 (queue full).\n");
        out.push_str("# TYPE stagecraft_http_rejected_total counter\n");
        let _ = writeln!(out, "stagecraft_http_rejected_total {}", self.rejected.lock().unwrap());
        let (hits, misses) = *self.cache.lock().unwrap();
        out.push_str("# HELP stagecraft_result_cache_hits_total Pipeline steps answered from the result cache.\n");
        out.push_str("# TYPE stagecraft_result_cache_hits_total counter\n");
        let _ = writeln!(out, "stagecraft_result_cache_hits_total {hits}");
        out.push_str("# HELP stagecraft_result_cache_misses_total Pipeline steps that ran (no cached result).\n");
        out.push_str("# TYPE stagecraft_result_cache_misses_total counter\n");
        let _ = writeln!(out, "stagecraft_result_cache_misses_total {misses}");
        for (name, help, series) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in series {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        }
        out
    }
}

/// Middleware: counts every request under its route pattern.
pub async fn track(State(metrics): State<std::sync::Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    metrics.record_request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}
