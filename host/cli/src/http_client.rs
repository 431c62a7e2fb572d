//! A small HTTP(S) client for the commands that talk to a running
//! `stagecraft serve` (`push`, `dev`): one request, the whole answer.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// What the server answered.
pub struct Answer {
    pub status: http::StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (an error when it is not).
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("the server's answer is not JSON")
    }

    /// The server's one-line error (`{"error": {"message"}}`), or the status.
    pub fn error_line(&self) -> String {
        let message = self
            .json()
            .ok()
            .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().chars().take(300).collect());
        format!("{} {}", self.status, message)
    }
}

/// Sends one request; `token` goes out as a bearer token.
pub async fn send(
    method: http::Method,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let connector = stagecraft_runtime::http::https_connector()?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut request = http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(content_type) = content_type {
        request = request.header(http::header::CONTENT_TYPE, content_type);
    }
    let request = request.body(Full::new(Bytes::from(body))).with_context(|| format!("invalid URL {url}"))?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {} s", timeout.as_secs()))?
        .map_err(|e| anyhow::anyhow!("{url}: {}", crate::one_line(&e)))
}
