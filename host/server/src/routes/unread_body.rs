//! An answer given before the request body was read (a wrong admin token,
//! an unknown route, a 413 by `Content-Length`) must still reach a client
//! that is sending a large body. hyper closes the connection once such an
//! answer is written, and a client still writing then sees a broken pipe
//! instead of the answer. As nginx's lingering close does, the rest of the
//! body is read and dropped first, bounded in bytes and in time; past
//! either bound the connection closes as before.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as _, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// How long the rest of a body may take to arrive before the answer goes
/// out anyway.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The most bytes read and dropped; the server's largest body limit.
#[derive(Clone, Copy, Debug)]
pub struct DrainLimit(pub u64);

/// The middleware: runs the request with a body it can take back, and
/// reads what the handler left unread before the answer goes out.
pub async fn drain_unread_body(limit: axum::extract::State<DrainLimit>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let shared = SharedBody(Arc::new(Mutex::new(Some(body))));
    let response = next.run(Request::from_parts(parts, Body::new(shared.clone()))).await;
    let rest = shared.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(rest) = rest.filter(|b| !b.is_end_stream()) {
        // A body announced past the bound is not worth reading.
        if rest.size_hint().lower() <= limit.0 .0 {
            let _ = tokio::time::timeout(DRAIN_TIME, drain(rest, limit.0 .0)).await;
        }
    }
    response
}

/// Reads and drops frames until the body ends or `limit` bytes were read.
async fn drain(mut body: Body, limit: u64) {
    use http_body_util::BodyExt;
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
        if read > limit {
            return;
        }
    }
}

/// The request body, shared between the handler and the middleware so that
/// the middleware finds whatever the handler did not read.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Option<Body>>>);

impl hyper::body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}
