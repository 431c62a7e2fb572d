//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! The host decides where requests may go and adds any credentials itself;
//! this side only builds the request, streams the body and reads the whole
//! response. A request the host refuses comes back as [`TransportError::Denied`].
//! Off wasm32 (native unit tests) there is no host and [`send`] always fails.

#[cfg(target_arch = "wasm32")]
pub use wasi_transport::send;

/// Responses larger than this are refused (a generated image is a few MiB).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A parsed `http(s)://authority/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub authority: String,
    pub path_and_query: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("URL {url:?} must start with http:// or https://"));
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
            return Err(format!("URL {url:?} has no valid host"));
        }
        let path = &rest[end..];
        let path_and_query = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self { https, authority: authority.to_owned(), path_and_query })
    }

    /// The URL with `path` appended to this one's path (`base_url` + `/v1/...`).
    pub fn join(&self, path: &str) -> Self {
        let base = self.path_and_query.trim_end_matches('/');
        Self { path_and_query: format!("{base}{path}"), ..self.clone() }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", if self.https { "https" } else { "http" }, self.authority, self.path_and_query)
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
    }
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportError {
    /// The host refused the request (no grant, or a host not on the allowlist).
    Denied { host: String },
    /// Anything else (connection refused, timeout, protocol error): transient.
    Failed(String),
}

/// Off wasm32 there is no `wasi:http` host to send through.
#[cfg(not(target_arch = "wasm32"))]
pub fn send(
    method: &str,
    url: &Url,
    _headers: &[(&str, &str)],
    _body: Option<&[u8]>,
) -> Result<Response, TransportError> {
    Err(TransportError::Failed(format!("{method} {url}: no wasi:http outside a WebAssembly host")))
}

#[cfg(target_arch = "wasm32")]
mod wasi_transport {
    use super::{Response, TransportError, Url, MAX_RESPONSE_BYTES};
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
    };
    use wasip2::io::streams::StreamError;

    /// Sends one request and reads the whole response.
    pub fn send(
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, TransportError> {
        let failed = |what: &str| TransportError::Failed(format!("{what} ({method} {url})"));
        let list: Vec<(String, Vec<u8>)> =
            headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
        let fields = Fields::from_list(&list).map_err(|e| failed(&format!("invalid request header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            other => Method::Other(other.to_owned()),
        };
        request.set_method(&method).map_err(|()| failed("invalid method"))?;
        request
            .set_scheme(Some(if url.https { &Scheme::Https } else { &Scheme::Http }))
            .map_err(|()| failed("invalid scheme"))?;
        request.set_authority(Some(&url.authority)).map_err(|()| failed("invalid host"))?;
        request.set_path_with_query(Some(&url.path_and_query)).map_err(|()| failed("invalid path"))?;
        let outgoing = request.body().map_err(|()| failed("request body taken twice"))?;

        let options = RequestOptions::new();
        // Best effort: a host may not support setting these.
        let _ = options.set_connect_timeout(Some(30_000_000_000));
        let _ = options.set_first_byte_timeout(Some(300_000_000_000));

        let future = outgoing_handler::handle(request, Some(options)).map_err(|e| code_error(e, url))?;
        // A request the host refuses closes the body stream: the reason is in
        // the response future, so a body error is reported only if it has none.
        let mut body_error = None;
        if let Some(body) = body {
            let stream = outgoing.write().map_err(|()| failed("request body stream taken twice"))?;
            for chunk in body.chunks(4096) {
                if let Err(e) = stream.blocking_write_and_flush(chunk) {
                    body_error = Some(failed(&format!("writing the request body: {}", stream_error(e))));
                    break;
                }
            }
        }
        if let Err(e) = OutgoingBody::finish(outgoing, None) {
            body_error.get_or_insert(code_error(e, url));
        }

        let response = loop {
            match future.get() {
                Some(result) => break result,
                None => future.subscribe().block(),
            }
        };
        let response = response.map_err(|()| failed("response taken twice"))?.map_err(|e| code_error(e, url))?;
        if let Some(e) = body_error {
            return Err(e);
        }
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response.consume().map_err(|()| failed("response body taken twice"))?;
        let mut data = Vec::new();
        {
            let stream = incoming.stream().map_err(|()| failed("response body stream taken twice"))?;
            loop {
                match stream.blocking_read(256 * 1024) {
                    Ok(chunk) => {
                        data.extend_from_slice(&chunk);
                        if data.len() > MAX_RESPONSE_BYTES {
                            return Err(TransportError::Failed(format!(
                                "the response from {url} is larger than {} MiB",
                                MAX_RESPONSE_BYTES >> 20
                            )));
                        }
                    }
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(failed(&format!("reading the response body: {}", stream_error(e)))),
                }
            }
        }
        let _trailers = IncomingBody::finish(incoming);
        Ok(Response { status, headers, body: data })
    }

    fn code_error(code: ErrorCode, url: &Url) -> TransportError {
        match code {
            ErrorCode::HttpRequestDenied => TransportError::Denied { host: url.authority.clone() },
            other => TransportError::Failed(format!("request to {url} failed: {other:?}")),
        }
    }

    fn stream_error(e: StreamError) -> String {
        match e {
            StreamError::Closed => "stream closed".to_owned(),
            StreamError::LastOperationFailed(err) => err.to_debug_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("https://api.openai.com").unwrap();
        assert_eq!(u, Url { https: true, authority: "api.openai.com".into(), path_and_query: "/".into() });
        assert_eq!(u.join("/v1/images/generations").to_string(), "https://api.openai.com/v1/images/generations");
        let u = Url::parse("http://127.0.0.1:8080/base/?x=1").unwrap();
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.path_and_query, "/base/?x=1");
        let u = Url::parse("http://h:1/api/").unwrap().join("/v1/x");
        assert_eq!(u.path_and_query, "/api/v1/x");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://").is_err());
        assert!(Url::parse("http://user@evil.com/").is_err());
    }
}
