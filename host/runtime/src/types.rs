//! Host-side data types: artifacts, stage inputs and outputs, stage info.
//! These mirror the WIT `types` interface but are independent of bindgen.

use serde::{Deserialize, Serialize};

/// A named blob passed into or out of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub media_type: String,
    #[serde(skip)]
    pub data: Vec<u8>,
}

impl Artifact {
    pub fn new(name: impl Into<String>, media_type: impl Into<String>, data: Vec<u8>) -> Self {
        Self { name: name.into(), media_type: media_type.into(), data }
    }

    /// Guesses a media type from a file name's extension.
    pub fn media_type_for(name: &str) -> &'static str {
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        match ext.as_str() {
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "gif" => "image/gif",
            "svg" => "image/svg+xml",
            "tif" | "tiff" => "image/tiff",
            "json" => "application/json",
            "csv" => "text/csv",
            "html" | "htm" => "text/html",
            "txt" => "text/plain",
            "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            _ => "application/octet-stream",
        }
    }

    /// A file extension for a media type (for naming written artifacts).
    pub fn extension_for(media_type: &str) -> &'static str {
        match media_type {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/gif" => "gif",
            "image/svg+xml" => "svg",
            "application/json" => "json",
            "text/csv" => "csv",
            "text/html" => "html",
            "text/plain" => "txt",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
            _ => "bin",
        }
    }
}

/// What a caller passes to a stage.
#[derive(Debug, Clone, Default)]
pub struct StageInput {
    pub artifacts: Vec<Artifact>,
    /// A JSON object (or null for "no params").
    pub params: serde_json::Value,
}

impl StageInput {
    pub fn new(artifacts: Vec<Artifact>, params: serde_json::Value) -> Self {
        Self { artifacts, params }
    }
}

/// What a stage returned, plus which version produced it.
#[derive(Debug, Clone)]
pub struct StageOutput {
    pub artifacts: Vec<Artifact>,
    pub metadata: serde_json::Value,
    pub stage: String,
    pub version: String,
    /// Content digest (sha256) of the component that ran.
    pub digest: String,
}

/// A stage's self-description (`describe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub params_schema: serde_json::Value,
    pub accepts: Vec<String>,
    pub produces: Vec<String>,
}
