//! The two request/response shapes: the OpenAI images API and a generic
//! JSON-over-HTTP form (a body template and a path to the base64 image in
//! the answer). Pure functions, unit-tested natively.

use serde_json::Value;

/// Where a generated image is in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// The encoded image bytes, base64.
    Base64(String),
    /// A URL to download the image from.
    Url(String),
}

/// The JSON body of `POST /v1/images/generations`.
pub fn openai_body(model: &str, prompt: &str, n: u32, size: &str) -> Value {
    serde_json::json!({
        "model": model,
        "prompt": prompt,
        "n": n,
        "size": size,
        "response_format": "b64_json",
    })
}

/// `data[i].b64_json` (or `data[i].url`) of an OpenAI images response.
pub fn openai_images(response: &Value) -> Result<Vec<ImageRef>, String> {
    let data = response.get("data").and_then(Value::as_array).ok_or("the response has no `data` array")?;
    data.iter()
        .enumerate()
        .map(|(i, item)| {
            if let Some(b64) = item.get("b64_json").and_then(Value::as_str) {
                Ok(ImageRef::Base64(b64.to_owned()))
            } else if let Some(url) = item.get("url").and_then(Value::as_str) {
                Ok(ImageRef::Url(url.to_owned()))
            } else {
                Err(format!("data[{i}] has neither `b64_json` nor `url`"))
            }
        })
        .collect()
}

/// Fills a body template: every string holding `{{name}}` has it replaced
/// by that variable's value; a string that is exactly `{{name}}` of a
/// numeric variable becomes that number.
pub fn fill_template(template: &Value, vars: &[(&str, Value)]) -> Value {
    match template {
        Value::String(s) => {
            for (name, value) in vars {
                if s.trim() == format!("{{{{{name}}}}}") {
                    return value.clone();
                }
            }
            let mut out = s.clone();
            for (name, value) in vars {
                let text = match value {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                out = out.replace(&format!("{{{{{name}}}}}"), &text);
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| fill_template(v, vars)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), fill_template(v, vars))).collect()),
        other => other.clone(),
    }
}

/// Follows a dotted path (`images.0.base64`; `*` takes every element of an
/// array) to the base64 strings it names.
pub fn extract_path(response: &Value, path: &str) -> Result<Vec<String>, String> {
    let mut current = vec![response];
    let mut walked = String::new();
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let mut next = Vec::new();
        for value in current {
            match (segment, value) {
                ("*", Value::Array(items)) => next.extend(items.iter()),
                (_, Value::Array(items)) => {
                    let index: usize = segment
                        .parse()
                        .map_err(|_| format!("`{walked}` is an array: `{segment}` must be an index or `*`"))?;
                    next.push(
                        items
                            .get(index)
                            .ok_or_else(|| format!("`{walked}` has {} elements, no index {index}", items.len()))?,
                    );
                }
                (_, Value::Object(map)) => {
                    next.push(map.get(segment).ok_or_else(|| {
                        let keys: Vec<&str> = map.keys().map(String::as_str).take(10).collect();
                        format!(
                            "no `{segment}` under `{}` (keys: {})",
                            if walked.is_empty() { "$" } else { &walked },
                            keys.join(", ")
                        )
                    })?);
                }
                (_, other) => return Err(format!("`{walked}` is {}, not an object or array", kind(other))),
            }
        }
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(segment);
        current = next;
    }
    current
        .into_iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("`{walked}` is {}, not a base64 string", kind(v))))
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The server's own words from an error response: `error.message`,
/// `message`, `error` (a string) or `detail`, else the start of the body.
pub fn server_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        let candidates = [
            json.pointer("/error/message"),
            json.get("message"),
            json.get("error").filter(|e| e.is_string()),
            json.get("detail"),
        ];
        if let Some(text) = candidates.into_iter().flatten().find_map(Value::as_str) {
            return truncate(text, 500);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        truncate(text, 500)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_response_forms() {
        let r = json!({"data": [{"b64_json": "AAA"}, {"url": "http://x/y.png"}]});
        assert_eq!(
            openai_images(&r).unwrap(),
            vec![ImageRef::Base64("AAA".into()), ImageRef::Url("http://x/y.png".into())]
        );
        assert!(openai_images(&json!({"data": [{}]})).unwrap_err().contains("data[0]"));
        assert!(openai_images(&json!({})).is_err());
    }

    #[test]
    fn template_fills_strings_and_numbers() {
        let t = json!({"input": {"text": "draw {{prompt}} please", "count": "{{n}}"}, "tags": ["{{size}}"], "k": 1});
        let out = fill_template(&t, &[("prompt", json!("a \"red\" cat")), ("n", json!(2)), ("size", json!("64x64"))]);
        assert_eq!(out, json!({"input": {"text": "draw a \"red\" cat please", "count": 2}, "tags": ["64x64"], "k": 1}));
    }

    #[test]
    fn paths_with_indices_and_wildcards() {
        let r = json!({"images": [{"base64": "A"}, {"base64": "B"}]});
        assert_eq!(extract_path(&r, "images.0.base64").unwrap(), vec!["A"]);
        assert_eq!(extract_path(&r, "images.*.base64").unwrap(), vec!["A", "B"]);
        assert!(extract_path(&r, "images.5.base64").unwrap_err().contains("2 elements"));
        assert!(extract_path(&r, "result.0").unwrap_err().contains("no `result`"));
        assert!(extract_path(&r, "images.0").unwrap_err().contains("an object"));
    }

    #[test]
    fn server_messages() {
        assert_eq!(server_message(br#"{"error": {"message": "bad size"}}"#), "bad size");
        assert_eq!(server_message(br#"{"detail": "nope"}"#), "nope");
        assert_eq!(server_message(b"plain text"), "plain text");
        assert_eq!(server_message(b""), "(empty body)");
    }
}
