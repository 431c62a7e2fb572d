//! Outgoing HTTP (`wasi:http/outgoing-handler`) for stages, granted per stage
//! by the host.
//!
//! Every component may import `wasi:http`: the linker always provides it, so
//! a stage built against it loads anywhere. Whether a request leaves the host
//! is decided here, in the `send_request` hook, per stage:
//!
//! - a stage without an [`HttpGrant`] in [`RuntimeConfig::http`](crate::RuntimeConfig)
//!   has every request refused with `HTTP-request-denied`;
//! - a stage with a grant may reach only the hosts on its allowlist (`host`
//!   allows that host on any port, `host:port` that one port); anything else
//!   is refused the same way, and the refusal is logged with the stage and host;
//! - the grant's headers (typically `Authorization: Bearer <key>`) are added
//!   by the host after the guest built its request, replacing any the guest
//!   set: the plugin never sees the key, and header values are never logged;
//! - requests of one stage go through one pooled client (keep-alive
//!   connections, HTTP/1.1 over TLS or plain), with at most `max_connections`
//!   in flight, and consecutive requests start at least `rate_limit_delay`
//!   apart, across all concurrent invocations of the stage.
//!
//! API keys come from host configuration only: [`HttpGrant::with_key_from_env`]
//! reads `STAGECRAFT_HTTP_<STAGE>_KEY` (or a variable the operator names).

use crate::capacity::{InvocationMeter, OpenRequest};
use anyhow::Context;
use http::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Requests one stage may have in flight when its grant does not say:
/// sized for fan-out, not for one core per call. The workloads we replace
/// run 10 to 32 hosted calls at once; 64 leaves room for two such pipelines
/// side by side, while staying under the concurrency that hosted image APIs
/// typically allow one key (more is refused upstream as 429 anyway). An
/// operator raises it per grant (`--http-max-connections STAGE=N`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// What one stage may do over outgoing HTTP.
#[derive(Clone)]
pub struct HttpGrant {
    /// Hosts the stage may reach: `host` (any port) or `host:port`.
    pub allowed_hosts: Vec<String>,
    /// Headers the host adds to every request (e.g. `Authorization`). Their
    /// values are secrets: never logged, never shown to the plugin.
    pub headers: Vec<(String, String)>,
    /// Minimum time between the starts of two requests of this stage.
    pub rate_limit_delay: Duration,
    /// Requests of this stage in flight at once (each holds a connection);
    /// more wait in line for one. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl std::fmt::Debug for HttpGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self.headers.iter().map(|(k, _)| format!("{k}: <redacted>")).collect();
        f.debug_struct("HttpGrant")
            .field("allowed_hosts", &self.allowed_hosts)
            .field("headers", &headers)
            .field("rate_limit_delay", &self.rate_limit_delay)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl HttpGrant {
    /// A grant for these hosts, with no injected headers, no rate limit and
    /// [`DEFAULT_MAX_CONNECTIONS`] connections.
    pub fn new<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> Self {
        Self {
            allowed_hosts: hosts.into_iter().map(Into::into).collect(),
            headers: Vec::new(),
            rate_limit_delay: Duration::ZERO,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Adds a header the host injects into every request.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Bearer <key>` with the key read from `var`, or
    /// from [`key_env_var`] of `stage` when `var` is `None`. A missing
    /// variable is not an error (the grant then carries no key); an empty
    /// one is.
    pub fn with_key_from_env(self, stage: &str, var: Option<&str>) -> anyhow::Result<Self> {
        let var = var.map(str::to_owned).unwrap_or_else(|| key_env_var(stage));
        match std::env::var(&var) {
            Ok(key) if key.trim().is_empty() => anyhow::bail!("{var} is set but empty"),
            Ok(key) => Ok(self.with_header("authorization", format!("Bearer {}", key.trim()))),
            Err(std::env::VarError::NotPresent) => Ok(self),
            Err(e) => Err(e).with_context(|| format!("reading {var}")),
        }
    }

    /// Whether a request to `authority` (`host` or `host:port`) with the
    /// given default port (80 or 443) is on the allowlist.
    pub fn allows(&self, authority: &str, default_port: u16) -> bool {
        let (host, port) = split_authority(authority, default_port);
        self.allowed_hosts.iter().any(|entry| {
            // Port 0 never occurs on the wire: here it means "any port".
            let (h, p) = split_authority(entry.trim(), 0);
            h.eq_ignore_ascii_case(&host) && (p == 0 || p == port)
        })
    }
}

/// Parses a command-line grant, `STAGE=host[:port],host...`, taking the
/// stage's key (if set) from [`key_env_var`] so it never appears on a
/// command line or in a pipeline file.
pub fn parse_grant(spec: &str, rate_limit_delay: Duration) -> anyhow::Result<(String, HttpGrant)> {
    let (stage, hosts) = spec
        .split_once('=')
        .with_context(|| format!("HTTP grant {spec:?} must look like STAGE=host[:port],host..."))?;
    let stage = stage.trim();
    anyhow::ensure!(!stage.is_empty(), "HTTP grant {spec:?} names no stage");
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
    anyhow::ensure!(!hosts.is_empty(), "HTTP grant for '{stage}' lists no hosts");
    if let Some(bad) = hosts.iter().find(|h| h.contains('/') || h.contains('@') || h.contains(char::is_whitespace)) {
        anyhow::bail!("HTTP grant for '{stage}': {bad:?} is not a host or host:port");
    }
    let mut grant = HttpGrant::new(hosts).with_key_from_env(stage, None)?;
    grant.rate_limit_delay = rate_limit_delay;
    Ok((stage.to_owned(), grant))
}

/// The environment variable holding `stage`'s API key:
/// `STAGECRAFT_HTTP_<STAGE>_KEY`, upper case, `-` as `_`.
pub fn key_env_var(stage: &str) -> String {
    let stage: String =
        stage.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("STAGECRAFT_HTTP_{stage}_KEY")
}

/// `host[:port]` into the host and the effective port.
fn split_authority(authority: &str, default_port: u16) -> (String, u16) {
    // Bracketed IPv6: [::1]:8080
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(default_port);
            return (host.to_owned(), port);
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse().unwrap_or(default_port)),
        _ => (authority.to_owned(), default_port),
    }
}

/// The connector every outgoing client of the host uses: HTTP/1.1, plain or
/// TLS with the Mozilla roots (webpki-roots), rustls on ring.
pub fn https_connector() -> anyhow::Result<hyper_rustls::HttpsConnector<HttpConnector>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .context("TLS configuration")?
        .https_or_http()
        .enable_http1()
        .build())
}

type PooledClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, WasiBody>;

/// The live state of one stage's grant: its pool, limits and headers.
struct GrantState {
    stage: Arc<str>,
    grant: HttpGrant,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: PooledClient,
    connections: Arc<Semaphore>,
    /// When the last request of this stage started (for the rate limit).
    last_start: Mutex<Option<Instant>>,
}

/// Every stage's grant, built once per runtime from the configuration.
#[derive(Default)]
pub struct HttpPolicy {
    grants: HashMap<String, Arc<GrantState>>,
}

impl HttpPolicy {
    pub fn new(grants: &HashMap<String, HttpGrant>) -> anyhow::Result<Self> {
        let mut out = HashMap::new();
        for (stage, grant) in grants {
            let state =
                GrantState::new(stage, grant.clone()).with_context(|| format!("HTTP grant of stage '{stage}'"))?;
            tracing::info!(stage = %stage, hosts = ?grant.allowed_hosts, injected_headers = grant.headers.len(),
                rate_limit_ms = grant.rate_limit_delay.as_millis() as u64, max_connections = grant.max_connections,
                "outgoing HTTP granted");
            out.insert(stage.clone(), Arc::new(state));
        }
        Ok(Self { grants: out })
    }

    /// The hooks for one invocation of `stage` (refusing everything when it
    /// has no grant); its open requests are counted on `meter`, so a wait
    /// on them shows as parked on HTTP.
    pub(crate) fn hooks_for(&self, stage: &str, meter: Arc<InvocationMeter>) -> StageHttpHooks {
        StageHttpHooks { stage: Arc::from(stage), grant: self.grants.get(stage).cloned(), meter: Some(meter) }
    }
}

impl GrantState {
    fn new(stage: &str, grant: HttpGrant) -> anyhow::Result<Self> {
        anyhow::ensure!(grant.max_connections > 0, "max_connections must be at least 1");
        let mut headers = Vec::new();
        for (name, value) in &grant.headers {
            let name = HeaderName::try_from(name.as_str()).with_context(|| format!("invalid header name {name:?}"))?;
            // The value is a secret: say which header, never what it holds.
            let mut value = HeaderValue::try_from(value.as_str())
                .map_err(|_| anyhow::anyhow!("invalid value for header {name}"))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        let connector = https_connector()?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(grant.max_connections)
            .build(connector);
        Ok(Self {
            stage: Arc::from(stage),
            connections: Arc::new(Semaphore::new(grant.max_connections)),
            grant,
            headers,
            client,
            last_start: Mutex::new(None),
        })
    }

    /// Waits for a connection slot (a queue: over the limit a request waits,
    /// never fails) and the rate limit, injects the headers and sends through
    /// the pool. `open` (the invocation's count of open requests) is held
    /// until the response body is dropped, like the connection slot.
    async fn send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        open: Option<OpenRequest>,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        let permit = self.connections.clone().acquire_owned().await.map_err(|_| HttpError::ConnectionLimitReached)?;
        if !self.grant.rate_limit_delay.is_zero() {
            let mut last = self.last_start.lock().await;
            if let Some(prev) = *last {
                let next = prev + self.grant.rate_limit_delay;
                tokio::time::sleep_until(next.into()).await;
            }
            *last = Some(Instant::now());
        }
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let method = request.method().clone();
        let host = request.uri().authority().map(|a| a.to_string()).unwrap_or_default();
        let path = request.uri().path().to_owned();
        let started = Instant::now();
        let first_byte = options.and_then(|o| o.first_byte_timeout).unwrap_or(Duration::from_secs(300));
        let response = match tokio::time::timeout(first_byte, self.client.request(request)).await {
            Err(_) => {
                tracing::warn!(stage = %self.stage, %method, host, path, "outgoing HTTP request timed out");
                return Err(HttpError::ConnectionReadTimeout);
            }
            Ok(Err(e)) => {
                tracing::warn!(stage = %self.stage, %method, host, path, "outgoing HTTP request failed: {e}");
                return Err(if e.is_connect() {
                    HttpError::Connect(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()))
                } else {
                    HttpError::HttpProtocolError
                });
            }
            Ok(Ok(response)) => response,
        };
        tracing::info!(stage = %self.stage, %method, host, path, status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64, "outgoing HTTP request");
        // The connection slot is held until the guest drops the body.
        Ok(response.map(move |body| {
            body.map_frame(move |frame| {
                let _held = (&permit, &open);
                frame
            })
            .map_err(HttpError::Hyper)
            .boxed_unsync()
        }))
    }
}

/// The `wasi:http` hooks of one invocation: the stage's grant, if any.
pub struct StageHttpHooks {
    stage: Arc<str>,
    grant: Option<Arc<GrantState>>,
    meter: Option<Arc<InvocationMeter>>,
}

impl StageHttpHooks {
    /// Hooks that refuse every request (the state before a grant is looked up).
    pub fn denied(stage: &str) -> Self {
        Self { stage: Arc::from(stage), grant: None, meter: None }
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for StageHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 };
        let Some(grant) = self.grant.clone() else {
            tracing::warn!(stage = %self.stage, host = %authority, "outgoing HTTP request refused: the stage has no HTTP grant");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        if !grant.grant.allows(&authority, default_port) {
            tracing::warn!(stage = %self.stage, host = %authority, allowed = ?grant.grant.allowed_hosts,
                "outgoing HTTP request refused: host not on the stage's allowlist");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let open = self.meter.as_ref().map(|m| m.http_request());
        Box::new(async move {
            let response = grant.send(request, options, open).await?;
            let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_host_and_port() {
        let g = HttpGrant::new(["api.example.com", "127.0.0.1:8080", "[::1]:9000"]);
        assert!(g.allows("api.example.com", 443));
        assert!(g.allows("API.example.com:8443", 443), "a bare host allows any port");
        assert!(g.allows("127.0.0.1:8080", 80));
        assert!(g.allows("[::1]:9000", 80));
        assert!(!g.allows("127.0.0.1:8081", 80));
        assert!(!g.allows("127.0.0.1", 80), "a host:port entry allows only that port");
        assert!(!g.allows("evil.example.com", 443));
        assert!(!g.allows("api.example.com.evil.net", 443));
        let v6 = HttpGrant::new(["[::1]:9000"]);
        assert!(!v6.allows("[::1]:9001", 80));
    }

    #[test]
    fn debug_redacts_header_values() {
        let g = HttpGrant::new(["x"]).with_header("Authorization", "Bearer sk-secret");
        let text = format!("{g:?}");
        assert!(!text.contains("sk-secret"), "{text}");
        assert!(text.contains("Authorization"));
    }

    #[test]
    fn grant_specs() {
        let (stage, g) = parse_grant("gen_x = api.example.com, 127.0.0.1:8080", Duration::from_millis(5)).unwrap();
        assert_eq!(stage, "gen_x");
        assert_eq!(g.allowed_hosts, ["api.example.com", "127.0.0.1:8080"]);
        assert_eq!(g.rate_limit_delay, Duration::from_millis(5));
        assert!(g.headers.is_empty(), "no STAGECRAFT_HTTP_GEN_X_KEY set");
        assert!(parse_grant("api.example.com", Duration::ZERO).is_err());
        assert!(parse_grant("s=", Duration::ZERO).is_err());
        assert!(parse_grant("s=https://api.example.com/v1", Duration::ZERO).is_err());
    }

    #[test]
    fn key_env_var_names() {
        assert_eq!(key_env_var("generate_http"), "STAGECRAFT_HTTP_GENERATE_HTTP_KEY");
        assert_eq!(key_env_var("my-stage"), "STAGECRAFT_HTTP_MY_STAGE_KEY");
    }
}
