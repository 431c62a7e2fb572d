//! A `stagecraft serve` started in-process on 127.0.0.1:0 and a plain hyper
//! client to talk to it: the harness of the HTTP tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use stagecraft_runtime::Runtime;
use stagecraft_server::{Server, ServerConfig};
use std::sync::Arc;
use std::time::Duration;

/// A running server and a client for it (the client's methods through `Deref`).
pub struct Harness {
    pub server: Server,
    pub api: Api,
    /// The server's home, removed when the harness is dropped.
    pub home: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Harness {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A client of one server's API.
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// One answer, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    pub async fn with_config(config: ServerConfig, runtime: Arc<Runtime>) -> Self {
        let server = Server::start(config, runtime).await.unwrap();
        let api = Api::new(&format!("http://{}", server.addr));
        Self { server, api, home: None }
    }
}

impl Api {
    /// A client of the server at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    pub async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self.client.request(req.body(Full::new(body.into())).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn invoke(&self, stage: &str, query: &str, media_type: &str, body: Vec<u8>) -> Reply {
        self.call(Method::POST, &format!("/v1/stages/{stage}/invoke{query}"), &[("content-type", media_type)], body)
            .await
    }

    pub async fn run_pipeline(&self, body: Value) -> Reply {
        self.call(Method::POST, "/v1/pipelines/run", &[("content-type", "application/json")], body.to_string()).await
    }

    /// Polls a job until it is final.
    pub async fn wait_job(&self, id: &str) -> Value {
        for _ in 0..600 {
            let job = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(job.status, StatusCode::OK, "{}", job.text());
            let job = job.json();
            if matches!(job["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {id} did not finish");
    }
}
