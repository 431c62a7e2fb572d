//! A loopback OpenAI-style images API that answers after a delay: the
//! hosted model that waiting work waits on, for the capacity and cluster
//! tests and benchmarks.

use serde_json::{json, Value};
use stagecraft_runtime::HttpGrant;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback OpenAI-style images API that answers every request after
/// `delay`, counting requests in flight (and the most at once), answered,
/// and abandoned by the caller (the connection closed while it waited).
pub struct SlowImagesApi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests being waited on now.
    pub in_flight: Arc<AtomicUsize>,
    /// The most at once.
    pub max_in_flight: Arc<AtomicUsize>,
    /// Requests answered.
    pub answered: Arc<AtomicUsize>,
    /// Requests whose caller hung up while waiting.
    pub abandoned: Arc<AtomicUsize>,
}

impl SlowImagesApi {
    /// Starts it on a free loopback port (on the current runtime).
    pub async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters: [Arc<AtomicUsize>; 4] = Default::default();
        let [in_flight, max_in_flight, answered, abandoned] = counters.clone();
        let png = crate::png(&crate::test_picture(16, 16));
        let body = json!({"created": 1, "data": [{"b64_json": base64_encode(&png)}]}).to_string();
        let response: Arc<[u8]> = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
        .into();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let [i, m, a, x] = counters.clone();
                let response = response.clone();
                tokio::spawn(serve_connection(stream, delay, response, i, m, a, x));
            }
        });
        Self { addr, in_flight, max_in_flight, answered, abandoned }
    }

    /// The grant that lets `generate_http` reach it.
    pub fn grant(&self) -> HashMap<String, HttpGrant> {
        HashMap::from([("generate_http".to_owned(), HttpGrant::new([self.addr.to_string()]))])
    }

    /// `generate_http` params that call it.
    pub fn params(&self, prompt: &str) -> Value {
        json!({"api": "openai", "base_url": format!("http://{}", self.addr), "prompt": prompt, "size": "16x16"})
    }
}

/// One keep-alive connection: read a request, wait `delay` (or see the
/// caller hang up), answer, repeat.
async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    delay: Duration,
    response: Arc<[u8]>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    abandoned: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(request_len) = read_request(&mut stream, &mut buf).await else { return };
        buf.drain(..request_len);
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Wait out the delay, watching for the caller to hang up; anything
        // it sends meanwhile is kept for the next request.
        let answer_at = tokio::time::Instant::now() + delay;
        let hung_up = loop {
            let mut chunk = [0u8; 4096];
            tokio::select! {
                _ = tokio::time::sleep_until(answer_at) => break false,
                r = stream.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => break true,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
            }
        };
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if hung_up {
            abandoned.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if stream.write_all(&response).await.is_err() {
            return;
        }
        answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads until `buf` holds one whole request (headers and a body framed by
/// `content-length` or chunked, as wasi:http sends a streamed body) and
/// returns its length; None when the connection ends first.
async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(len) = whole_request_len(buf) {
            return Some(len);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of the first request in `buf` if it is all there.
fn whole_request_len(buf: &[u8]) -> Option<usize> {
    let find = |from: usize, pat: &[u8]| buf[from..].windows(pat.len()).position(|w| w == pat).map(|at| from + at);
    let head_end = find(0, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        // Chunks: a hex size line, that many bytes and CRLF; size 0 ends it
        // (no trailers from our clients).
        let mut at = head_end;
        loop {
            let line_end = find(at, b"\r\n")?;
            let size_text = std::str::from_utf8(&buf[at..line_end]).ok()?.split(';').next()?.trim();
            let size = usize::from_str_radix(size_text, 16).expect("chunk size in hex");
            at = line_end + 2;
            if size == 0 {
                return (buf.len() >= at + 2).then_some(at + 2);
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            at += size + 2;
        }
    }
    let length: usize = header("content-length:").and_then(|v| v.parse().ok()).unwrap_or(0);
    (buf.len() >= head_end + length).then_some(head_end + length)
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
