//! Helpers shared by the HTTP service's test files (`server`, `server_crash`).

use serde_json::Value;

/// One server-sent event block as (event name, data JSON); `None` for a
/// block without both (a comment or keep-alive). The server's data is always
/// JSON: anything else fails the test.
pub fn sse_event(block: &str) -> Option<(String, Value)> {
    let mut name = None;
    let mut data = None;
    for line in block.lines() {
        if let Some(n) = line.strip_prefix("event:") {
            name = Some(n.trim().to_owned());
        } else if let Some(d) = line.strip_prefix("data:") {
            data = Some(serde_json::from_str(d.trim()).unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {d}")));
        }
    }
    Some((name?, data?))
}
