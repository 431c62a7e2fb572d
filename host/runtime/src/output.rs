//! The stage-output boundary: what a stage returned becomes a
//! [`StageOutput`](crate::StageOutput) here, once, checked against the
//! [`Quotas`] and with artifact names every consumer can use as they are.
//!
//! Artifact names come from plugins, so they are normalised here (and
//! nowhere else): ASCII letters, digits, `.`, `_`, `-` and `+` only (any
//! other character becomes `_`, so no separators and no control
//! characters), no leading dot, never empty (`artifact`), at most
//! [`MAX_NAME_LEN`] bytes (the stem is cut, the extension kept), and unique
//! within one output, ignoring case (a repeat of `cells.png` becomes
//! `cells-2.png`, then `cells-3.png`). Each name that changed is listed in
//! the metadata under `"renamed_artifacts"` as `{"name", "original"}`.

use crate::config::Quotas;
use crate::quota::{QuotaExceeded, QuotaKind};
use crate::types::Artifact;
use serde_json::{json, Value};
use std::collections::HashSet;

/// Longest artifact name kept, in bytes: well under any file system's 255.
pub const MAX_NAME_LEN: usize = 128;

/// Checks an output's size against the quotas, normalises its artifact
/// names and parses its metadata.
pub fn finish(
    artifacts: Vec<Artifact>,
    metadata: &str,
    quotas: &Quotas,
) -> Result<(Vec<Artifact>, Value), QuotaExceeded> {
    if artifacts.len() as u64 > quotas.artifacts {
        return Err(QuotaExceeded::new(QuotaKind::Artifacts, quotas.artifacts));
    }
    let total: u64 = artifacts.iter().map(|a| a.data.len() as u64).sum();
    if total > quotas.output_bytes {
        return Err(QuotaExceeded::new(QuotaKind::OutputBytes, quotas.output_bytes));
    }
    if metadata.len() as u64 > quotas.metadata_bytes {
        return Err(QuotaExceeded::new(QuotaKind::MetadataBytes, quotas.metadata_bytes));
    }
    let mut metadata = parse_metadata(metadata);
    let mut taken = HashSet::new();
    let mut renamed = Vec::new();
    let artifacts = artifacts
        .into_iter()
        .map(|mut a| {
            let name = unique(&normalize_name(&a.name), &mut taken);
            let original = std::mem::replace(&mut a.name, name);
            if a.name != original {
                renamed.push(json!({ "name": a.name, "original": original }));
            }
            a
        })
        .collect();
    if !renamed.is_empty() {
        if !metadata.is_object() {
            metadata = json!({ "value": metadata });
        }
        metadata["renamed_artifacts"] = Value::Array(renamed);
    }
    Ok((artifacts, metadata))
}

/// Stages should return a JSON object; anything else is kept as a string.
fn parse_metadata(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// One artifact name made safe as a file name on any system (see the
/// module doc); applying it twice changes nothing.
pub fn normalize_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') { c } else { '_' })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    if cleaned.is_empty() {
        return "artifact".to_owned();
    }
    if cleaned.len() <= MAX_NAME_LEN {
        return cleaned.to_owned();
    }
    // Keep a short extension; cut the stem (all ASCII now, so any index is
    // a char boundary).
    let ext = cleaned.rsplit_once('.').map(|(_, e)| e).filter(|e| e.len() <= 16).unwrap_or("");
    let stem_len = MAX_NAME_LEN - if ext.is_empty() { 0 } else { ext.len() + 1 };
    let stem = &cleaned[..stem_len];
    if ext.is_empty() {
        stem.to_owned()
    } else {
        format!("{stem}.{ext}")
    }
}

/// `name`, or `stem-2.ext`, `stem-3.ext`... whichever is not taken yet
/// (ignoring case, for case-insensitive file systems); records it as taken.
fn unique(name: &str, taken: &mut HashSet<String>) -> String {
    if taken.insert(name.to_ascii_lowercase()) {
        return name.to_owned();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    (2u64..)
        .map(|n| {
            let suffix = format!("-{n}{ext}");
            let keep = stem.len().min(MAX_NAME_LEN.saturating_sub(suffix.len()));
            format!("{}{suffix}", &stem[..keep])
        })
        .find(|candidate| taken.insert(candidate.to_ascii_lowercase()))
        .expect("some suffix is free")
}

/// `text` cut to at most `max` bytes (on a char boundary) with a marker
/// saying how long it was; one line (newlines become spaces).
pub fn truncate_message(text: &str, max: usize) -> String {
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    if text.len() <= max {
        return one_line(text);
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} [... cut: {} bytes in all]", one_line(&text[..cut]), text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> (Vec<String>, Value) {
        let artifacts = list.iter().map(|n| Artifact::new(*n, "image/png", vec![1])).collect();
        let (out, meta) = finish(artifacts, "{\"ok\":true}", &Quotas::default()).unwrap();
        (out.into_iter().map(|a| a.name).collect(), meta)
    }

    #[test]
    fn names_are_plain_bounded_and_unique() {
        let long = format!("{}.png", "x".repeat(5000));
        let (out, meta) =
            names(&["a.png", "A.png", "a.png", "../../etc/passwd", "", "\u{7}bell\n", long.as_str(), "ok.csv"]);
        assert_eq!(out[..6], ["a.png", "A-2.png", "a-3.png", "_.._etc_passwd", "artifact", "_bell_"]);
        assert_eq!(out[6].len(), MAX_NAME_LEN);
        assert!(out[6].ends_with("x.png"));
        assert_eq!(out[7], "ok.csv");
        assert_eq!(meta["ok"], true);
        let renamed = meta["renamed_artifacts"].as_array().unwrap();
        assert_eq!(renamed.len(), 6, "{renamed:?}");
        assert_eq!(renamed[0], json!({ "name": "A-2.png", "original": "A.png" }));
        for name in &out {
            assert_eq!(&normalize_name(name), name, "normalising twice changes nothing");
        }
    }

    #[test]
    fn many_repeats_of_a_long_name_stay_bounded_and_distinct() {
        let long = "y".repeat(300);
        let list: Vec<&str> = std::iter::repeat_n(long.as_str(), 20).collect();
        let (out, _) = names(&list);
        let distinct: HashSet<_> = out.iter().collect();
        assert_eq!(distinct.len(), 20);
        assert!(out.iter().all(|n| n.len() <= MAX_NAME_LEN));
    }

    #[test]
    fn outputs_past_a_quota_are_refused_by_name() {
        let quotas = Quotas { artifacts: 2, output_bytes: 10, metadata_bytes: 5, ..Quotas::default() };
        let three = vec![Artifact::new("a", "x/y", vec![]); 3];
        assert_eq!(finish(three, "", &quotas).unwrap_err().to_string(), "quota exceeded: artifacts 2");
        let big = vec![Artifact::new("a", "x/y", vec![0; 11])];
        assert_eq!(finish(big, "", &quotas).unwrap_err().to_string(), "quota exceeded: output 10 bytes");
        assert_eq!(finish(vec![], "{\"a\":1}", &quotas).unwrap_err().kind, QuotaKind::MetadataBytes);
    }

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        assert_eq!(truncate_message("short\nline", 100), "short line");
        let cut = truncate_message(&"é".repeat(100), 11);
        assert_eq!(cut, format!("{} [... cut: 200 bytes in all]", "é".repeat(5)));
    }
}
