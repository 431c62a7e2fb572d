//! How artifacts go back to callers: the `Accept` negotiation of
//! `POST /v1/stages/{name}/invoke` (JSON with links, or one multipart body
//! with a JSON report part and one part per artifact) and the
//! `Content-Disposition` headers that carry artifact names.

use axum::http::{header, HeaderMap};
use std::sync::atomic::{AtomicU64, Ordering};

/// The multipart flavours a caller can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multipart {
    /// `multipart/mixed` (also what `multipart/*` gets).
    Mixed,
    /// `multipart/form-data`: parts named `report` and `artifact`.
    FormData,
}

/// Whether the caller's `Accept` prefers a multipart answer: the media
/// range with the highest q-value among JSON, multipart and `*/*` wins,
/// the earliest listed on a tie. No `Accept` (or JSON first) means JSON.
pub fn negotiate(headers: &HeaderMap) -> Option<Multipart> {
    let accept = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let mut best: Option<(f32, Option<Multipart>)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q =
            parts.filter_map(|p| p.trim().strip_prefix("q=")).find_map(|q| q.trim().parse::<f32>().ok()).unwrap_or(1.0);
        let choice = match media.as_str() {
            "multipart/mixed" | "multipart/*" => Some(Multipart::Mixed),
            "multipart/form-data" => Some(Multipart::FormData),
            "application/json" | "application/*" | "*/*" => None,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, choice));
        }
    }
    best.and_then(|(_, c)| c)
}

/// A file name as a quoted-string: quotes, backslashes and control
/// characters become `_`, and non-ASCII too (the exact name then goes in
/// `filename*`, RFC 6266 / 8187).
fn ascii_fallback(name: &str) -> String {
    name.chars().map(|c| if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' { c } else { '_' }).collect()
}

fn percent_encode(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Content-Disposition` with a file name, e.g. `attachment;
/// filename="a.png"` (plus `filename*` when the name is not plain ASCII).
pub fn disposition(kind: &str, name: &str) -> String {
    let fallback = ascii_fallback(name);
    if fallback == name {
        format!("{kind}; filename=\"{name}\"")
    } else {
        format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{}", percent_encode(name))
    }
}

/// One part of a multipart body.
pub struct Part<'a> {
    /// The `Content-Disposition` value.
    pub disposition: String,
    pub media_type: &'a str,
    pub data: &'a [u8],
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A boundary that occurs in none of the parts (RFC 2046 §5.1.1).
fn boundary(parts: &[Part<'_>]) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let candidate = format!("stagecraft-{nanos:x}-{n:x}");
        if !parts.iter().any(|p| contains(p.data, candidate.as_bytes())) {
            return candidate;
        }
    }
}

/// The body and its `Content-Type` (with the boundary).
pub fn encode(kind: Multipart, parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = boundary(parts);
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.data.len() + 160).sum::<usize>() + 64);
    for p in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(format!("Content-Type: {}\r\n", p.media_type).as_bytes());
        body.extend_from_slice(format!("Content-Disposition: {}\r\n", p.disposition).as_bytes());
        body.extend_from_slice(format!("Content-Length: {}\r\n\r\n", p.data.len()).as_bytes());
        body.extend_from_slice(p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let media = match kind {
        Multipart::Mixed => "multipart/mixed",
        Multipart::FormData => "multipart/form-data",
    };
    (format!("{media}; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Option<Multipart> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        negotiate(&h)
    }

    #[test]
    fn accept_picks_the_preferred_range() {
        assert_eq!(negotiate(&HeaderMap::new()), None);
        assert_eq!(accept("application/json"), None);
        assert_eq!(accept("multipart/*"), Some(Multipart::Mixed));
        assert_eq!(accept("multipart/form-data"), Some(Multipart::FormData));
        assert_eq!(accept("application/json, multipart/mixed"), None);
        assert_eq!(accept("application/json;q=0.5, multipart/mixed"), Some(Multipart::Mixed));
        assert_eq!(accept("text/html, multipart/mixed;q=0.1"), Some(Multipart::Mixed));
        assert_eq!(accept("multipart/mixed;q=0"), None);
    }

    #[test]
    fn names_are_quoted_safely() {
        assert_eq!(disposition("attachment", "a b.png"), "attachment; filename=\"a b.png\"");
        assert_eq!(
            disposition("attachment", "x\"y.txt"),
            "attachment; filename=\"x_y.txt\"; filename*=UTF-8''x%22y.txt"
        );
        assert_eq!(disposition("inline", "é.png"), "inline; filename=\"_.png\"; filename*=UTF-8''%C3%A9.png");
    }

    #[test]
    fn the_boundary_is_not_in_any_part() {
        let parts = [Part { disposition: "inline".into(), media_type: "text/plain", data: b"--stagecraft-" }];
        let (ct, body) = encode(Multipart::Mixed, &parts);
        let boundary = ct.split("boundary=").nth(1).unwrap();
        assert!(!contains(parts[0].data, boundary.as_bytes()));
        assert!(body.ends_with(format!("--{boundary}--\r\n").as_bytes()));
    }
}
