//! Answers of synchronous invocations, kept in memory so that invoking the
//! same component version on the same input again instantiates nothing.
//!
//! Keyed exactly like the pipeline result cache ([`ResultCache::key`]:
//! component digest, canonical params, each input's name, media type and
//! digest), so a hot swap is a miss by construction and an answer always
//! names the version that produced it. Stages are treated as pure
//! functions of their input here as in pipelines. Callers decide per
//! request with `Cache-Control`: `no-cache` runs the stage and keeps the
//! fresh answer, `no-store` runs it and keeps nothing. Failures are never
//! kept. Bounded by bytes, oldest dropped first; 0 bytes turns it off.
//!
//! [`ResultCache::key`]: stagecraft_orchestrator::ResultCache::key

use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde_json::Value;
use stagecraft_orchestrator::blobs::sha256_hex;
use stagecraft_runtime::StageOutput;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One artifact of an answer. Its digest is computed once, when first
/// needed (a multipart answer needs none).
pub struct AnswerArtifact {
    pub name: String,
    pub media_type: String,
    pub data: Bytes,
    digest: OnceLock<String>,
}

impl AnswerArtifact {
    pub fn new(name: String, media_type: String, data: Bytes) -> Self {
        Self { name, media_type, data, digest: OnceLock::new() }
    }

    pub fn digest(&self) -> &str {
        self.digest.get_or_init(|| sha256_hex(&self.data))
    }
}

/// What a successful invocation answered, in the form both reply kinds
/// (JSON with links, multipart with the bytes) are rendered from.
pub struct Answer {
    pub stage: String,
    pub version: String,
    pub digest: String,
    pub metadata: Value,
    pub artifacts: Vec<AnswerArtifact>,
}

impl Answer {
    pub fn from_output(output: StageOutput) -> Self {
        Self {
            artifacts: output
                .artifacts
                .into_iter()
                .map(|a| AnswerArtifact {
                    name: a.name,
                    media_type: a.media_type,
                    data: Bytes::from(a.data),
                    digest: OnceLock::new(),
                })
                .collect(),
            stage: output.stage,
            version: output.version,
            digest: output.digest,
            metadata: output.metadata,
        }
    }

    /// Bytes held by this answer (artifacts and a rough share for the rest).
    fn size(&self) -> usize {
        256 + self.artifacts.iter().map(|a| a.data.len() + a.name.len() + a.media_type.len() + 64).sum::<usize>()
    }
}

/// What the caller's `Cache-Control` asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Answer from the cache when possible, keep a fresh answer.
    Use,
    /// `no-cache`: run the stage, keep the fresh answer.
    Refresh,
    /// `no-store` (or the cache is off): run the stage, keep nothing.
    Bypass,
}

impl CacheUse {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut wanted = CacheUse::Use;
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for directive in text.split(',').map(|d| d.trim().to_ascii_lowercase()) {
                match directive.as_str() {
                    "no-store" => return CacheUse::Bypass,
                    "no-cache" => wanted = CacheUse::Refresh,
                    _ => {}
                }
            }
        }
        wanted
    }
}

#[derive(Default)]
struct Kept {
    by_key: HashMap<String, Arc<Answer>>,
    order: VecDeque<String>,
    bytes: usize,
}

pub struct InvokeCache {
    kept: Mutex<Kept>,
    max_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl InvokeCache {
    pub fn new(max_bytes: usize) -> Self {
        Self { kept: Mutex::default(), max_bytes, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// The kept answer for `key`, counted as a hit or a miss.
    pub fn get(&self, key: &str) -> Option<Arc<Answer>> {
        let found = self.kept.lock().unwrap().by_key.get(key).cloned();
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `answer` under `key` (an answer larger than the whole cache is
    /// not kept), dropping the oldest answers past the byte bound.
    pub fn put(&self, key: String, answer: Arc<Answer>) {
        let size = answer.size();
        if size > self.max_bytes {
            return;
        }
        let mut kept = self.kept.lock().unwrap();
        match kept.by_key.insert(key.clone(), answer) {
            Some(old) => kept.bytes -= old.size(),
            None => kept.order.push_back(key),
        }
        kept.bytes += size;
        while kept.bytes > self.max_bytes {
            let Some(oldest) = kept.order.pop_front() else { break };
            if let Some(old) = kept.by_key.remove(&oldest) {
                kept.bytes -= old.size();
            }
        }
    }

    /// (hits, misses) since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Answers kept now, and their bytes.
    pub fn occupancy(&self) -> (usize, usize) {
        let kept = self.kept.lock().unwrap();
        (kept.by_key.len(), kept.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn answer(bytes: usize) -> Arc<Answer> {
        Arc::new(Answer {
            stage: "s".into(),
            version: "1".into(),
            digest: "d".into(),
            metadata: Value::Null,
            artifacts: vec![AnswerArtifact {
                name: "a".into(),
                media_type: "x/y".into(),
                data: Bytes::from(vec![0u8; bytes]),
                digest: OnceLock::new(),
            }],
        })
    }

    #[test]
    fn keeps_answers_within_the_bound_dropping_the_oldest() {
        let one = answer(1000).size();
        let cache = InvokeCache::new(one * 2);
        cache.put("a".into(), answer(1000));
        cache.put("b".into(), answer(1000));
        assert!(cache.get("a").is_some());
        cache.put("c".into(), answer(1000));
        assert!(cache.get("a").is_none(), "the oldest answer is dropped past the bound");
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        assert_eq!(cache.occupancy(), (2, one * 2));
        assert_eq!(cache.counts(), (3, 1));
        cache.put("huge".into(), answer(one * 3));
        assert!(cache.get("huge").is_none(), "an answer larger than the cache is not kept");
        assert_eq!(cache.occupancy().0, 2);
    }

    #[test]
    fn cache_control_decides() {
        let mut h = HeaderMap::new();
        assert_eq!(CacheUse::from_headers(&h), CacheUse::Use);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0, No-Cache"));
        assert_eq!(CacheUse::from_headers(&h), CacheUse::Refresh);
        h.append(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(CacheUse::from_headers(&h), CacheUse::Bypass);
    }
}
