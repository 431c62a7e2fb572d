//! `stagecraft push COMPONENT --server URL`: uploads a component as a new
//! version of its stage on a running `stagecraft serve` (the admin token)
//! and prints what the server says it now serves.

use crate::http_client;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The component file (NAME.wasm, as `stagecraft build` writes it).
    component: PathBuf,
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "STAGECRAFT_SERVER")]
    server: String,
    /// The stage's name (default: the file name without .wasm).
    #[arg(long)]
    name: Option<String>,
    /// Environment variable holding the server's admin token.
    #[arg(long, value_name = "VAR", default_value = "STAGECRAFT_ADMIN_TOKEN")]
    token_env: String,
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let token = std::env::var(&args.token_env)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .with_context(|| format!("${} is not set: push needs the server's admin token", args.token_env))?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => stage_name_of(&args.component)?,
    };
    let described = push(&args.server, &name, &args.component, token.trim()).await?;
    println!("{}", describe_line(&described));
    println!("{}", serde_json::to_string_pretty(&described)?);
    Ok(())
}

/// The stage name a component file stands for: its name without `.wasm`.
pub fn stage_name_of(component: &Path) -> anyhow::Result<String> {
    component
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".wasm"))
        .map(str::to_owned)
        .with_context(|| format!("{} is not a NAME.wasm file (or pass --name)", component.display()))
}

/// Uploads `component` as stage `name`; returns the server's description
/// of the version it now serves.
pub async fn push(server: &str, name: &str, component: &Path, token: &str) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(component).with_context(|| format!("cannot read {}", component.display()))?;
    let url = format!("{}/v1/stages/{name}", server.trim_end_matches('/'));
    // The server compiles and validates before answering: a Python stage takes seconds.
    let answer = http_client::send(
        http::Method::PUT,
        &url,
        Some(token),
        Some("application/wasm"),
        bytes,
        Duration::from_secs(300),
    )
    .await?;
    anyhow::ensure!(answer.status.is_success(), "the server refused {name}: {}", answer.error_line());
    answer.json()
}

/// "pushed NAME VERSION (digest …): active", from the server's answer.
pub fn describe_line(described: &serde_json::Value) -> String {
    let field = |k: &str| described.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    let digest = field("digest");
    format!(
        "pushed {} {} (digest {}): now active",
        field("name"),
        field("version"),
        digest.get(..12).unwrap_or(&digest)
    )
}
