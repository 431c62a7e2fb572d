//! `generate_http`: text-to-image through a hosted model, over the outgoing
//! HTTP the host grants this stage.
//!
//! Two forms: `openai` (`POST {base_url}/v1/images/generations`, images from
//! `data[i].b64_json` or downloaded from `data[i].url`) and `generic` (a URL,
//! a JSON body template with `{{prompt}}`, `{{n}}`, `{{size}}`, `{{width}}`,
//! `{{height}}`, `{{model}}`, and a `response_path` to the base64 image).
//! 429 and 5xx are retried with exponential backoff (honouring
//! `Retry-After`); other 4xx fail with the server's message.
//!
//! The stage never holds an API key: the host adds the credentials to the
//! requests it lets through (see the host's `http` grants), and refuses
//! hosts that are not on this stage's allowlist.

pub mod api;
pub mod client;
pub mod retry;

use api::ImageRef;
use base64::Engine as _;
use client::{TransportError, Url};
use stagecraft_sdk::prelude::*;
use std::time::Instant;

pub const MAX_COUNT: u32 = 10;

/// Which request/response shape the service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// OpenAI's images API: `POST {base_url}/v1/images/generations` with
    /// `{model, prompt, n, size, response_format: "b64_json"}`.
    #[default]
    Openai,
    /// Any JSON-over-HTTP service: `POST {url}` with `body` (a template) and
    /// the image found at `response_path` in the JSON answer.
    Generic,
}

fn default_base_url() -> String {
    "https://api.openai.com".to_owned()
}
fn default_model() -> String {
    "gpt-image-1".to_owned()
}
fn default_n() -> u32 {
    1
}
fn default_size() -> String {
    "1024x1024".to_owned()
}
fn default_max_retries() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    500
}

/// Parameters of `generate_http`. Credentials are not params: the host
/// injects them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The service's API shape.
    #[serde(default)]
    pub api: Api,
    /// What to draw, in words.
    #[schemars(length(min = 1, max = 4000))]
    pub prompt: String,
    /// Number of images to ask for.
    #[serde(default = "default_n")]
    #[schemars(range(min = 1, max = 10))]
    pub n: u32,
    /// Image size as `WIDTHxHEIGHT` (e.g. `1024x1024`), or `auto` where the service allows it.
    #[serde(default = "default_size")]
    pub size: String,
    /// A seed for services that draw the same picture for the same seed:
    /// sent as `seed` (`openai`; `{{seed}}` in a generic template). With one,
    /// an operator may let the host reuse results (`--reuse generate_http=seeded`).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Model name sent to the service (`openai`; `{{model}}` in a generic template).
    #[serde(default = "default_model")]
    pub model: String,
    /// `openai`: the service root; the request goes to `{base_url}/v1/images/generations`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// `generic`: the URL to POST to.
    #[serde(default)]
    pub url: Option<String>,
    /// `generic`: the JSON body, where strings may hold `{{prompt}}`, `{{n}}`, `{{size}}`,
    /// `{{width}}`, `{{height}}`, `{{model}}` and `{{seed}}` (a string that is exactly `{{n}}`,
    /// `{{width}}`, `{{height}}` or `{{seed}}` becomes a number). Default: `{"prompt": "{{prompt}}"}`.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// `generic`: dotted path to the base64 image in the JSON answer, e.g. `images.0.base64`;
    /// `*` takes every element of an array (`images.*.base64`).
    #[serde(default)]
    pub response_path: Option<String>,
    /// Further attempts after a 429, a 5xx or a connection failure.
    #[serde(default = "default_max_retries")]
    #[schemars(range(max = 10))]
    pub max_retries: u32,
    /// Wait before the first retry in milliseconds; doubles each time (a `Retry-After` header wins).
    #[serde(default = "default_backoff_ms")]
    #[schemars(range(max = 60000))]
    pub backoff_ms: u64,
}

/// Counters for the metadata.
#[derive(Default)]
struct Stats {
    requests: u32,
    attempts: u32,
    retries: u32,
}

pub struct GenerateHttp;

impl Stage for GenerateHttp {
    type Params = Params;
    const NAME: &'static str = "generate_http";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Text-to-image through a hosted model (OpenAI-style images API or a generic \
        JSON-over-HTTP service), over outgoing HTTP the host grants this stage; the host holds the API key";
    const PRODUCES: &'static [&'static str] = &["image/png", "image/jpeg"];

    fn run(input: Input<Params>) -> Result<Output, StageError> {
        let p = input.params;
        let (width, height) = validate(&p)?;
        let started = Instant::now();
        let mut stats = Stats::default();
        progress(0.05, "requesting images");

        let (target, refs) = match p.api {
            Api::Openai => {
                let url = Url::parse(&p.base_url).map_err(StageError::invalid_input)?.join("/v1/images/generations");
                let mut body = api::openai_body(&p.model, &p.prompt, p.n, &p.size);
                if let Some(seed) = p.seed {
                    body["seed"] = json!(seed);
                }
                let json = post_json(&p, &url, &body, &mut stats)?;
                let refs = api::openai_images(&json).map_err(|e| StageError::failed(format!("{url}: {e}")))?;
                (url, refs)
            }
            Api::Generic => {
                let url = p.url.as_deref().ok_or_else(|| StageError::invalid_input("api `generic` needs `url`"))?;
                let url = Url::parse(url).map_err(StageError::invalid_input)?;
                let path = p
                    .response_path
                    .as_deref()
                    .ok_or_else(|| StageError::invalid_input("api `generic` needs `response_path`"))?;
                let template = p.body.clone().unwrap_or_else(|| json!({"prompt": "{{prompt}}"}));
                let vars = [
                    ("prompt", json!(p.prompt)),
                    ("n", json!(p.n)),
                    ("size", json!(p.size)),
                    ("width", width.map(|w| json!(w)).unwrap_or(json!(null))),
                    ("height", height.map(|h| json!(h)).unwrap_or(json!(null))),
                    ("model", json!(p.model)),
                    ("seed", p.seed.map(|s| json!(s)).unwrap_or(json!(null))),
                ];
                let body = api::fill_template(&template, &vars);
                let json = post_json(&p, &url, &body, &mut stats)?;
                let found = api::extract_path(&json, path)
                    .map_err(|e| StageError::failed(format!("{url}: response_path `{path}`: {e}")))?;
                (url, found.into_iter().map(ImageRef::Base64).collect())
            }
        };
        if refs.is_empty() {
            return Err(StageError::failed(format!("{target} answered without any image")));
        }

        let mut output = Output::new();
        let mut images = Vec::new();
        let total = refs.len();
        for (i, image) in refs.into_iter().enumerate() {
            progress(0.5 + 0.5 * i as f32 / total as f32, &format!("decoding image {} of {total}", i + 1));
            let bytes = match image {
                ImageRef::Base64(text) => {
                    base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|e| {
                        StageError::failed(format!("image {} from {target} is not valid base64: {e}", i + 1))
                    })?
                }
                ImageRef::Url(link) => download(&p, &link, &mut stats)?,
            };
            let (format, w, h) =
                check_image(&bytes).map_err(|e| StageError::failed(format!("image {} from {target}: {e}", i + 1)))?;
            let name = format!("image-{}.{}", i + 1, format.extension());
            images.push(
                json!({"name": name, "width": w, "height": h, "media_type": format.media_type(), "bytes": bytes.len()}),
            );
            output = output.artifact(name, format.media_type(), bytes);
        }
        progress(1.0, "done");
        Ok(output
            .meta("api", p.api)
            .meta("model", if p.api == Api::Openai { Some(&p.model) } else { None })
            .meta("endpoint", target.to_string())
            .meta("prompt", &p.prompt)
            .meta("requested", p.n)
            .meta("images", images)
            .meta("requests", stats.requests)
            .meta("attempts", stats.attempts)
            .meta("retries", stats.retries)
            .meta("elapsed_ms", started.elapsed().as_millis() as u64))
    }
}

/// Checks the params that the schema alone cannot; returns the size in pixels when given.
fn validate(p: &Params) -> Result<(Option<u32>, Option<u32>), StageError> {
    if p.prompt.trim().is_empty() {
        return Err(StageError::invalid_input("`prompt` is empty"));
    }
    if p.n == 0 || p.n > MAX_COUNT {
        return Err(StageError::invalid_input(format!("`n` must be 1 to {MAX_COUNT}, got {}", p.n)));
    }
    if p.max_retries > 10 {
        return Err(StageError::invalid_input("`max_retries` must be at most 10"));
    }
    if p.size == "auto" {
        return Ok((None, None));
    }
    let parsed = p
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|&(w, h)| (1..=8192).contains(&w) && (1..=8192).contains(&h));
    match parsed {
        Some((w, h)) => Ok((Some(w), Some(h))),
        None => Err(StageError::invalid_input(format!(
            "`size` must be WIDTHxHEIGHT (1 to 8192 each) or auto, got {:?}",
            p.size
        ))),
    }
}

/// POSTs JSON with retries and parses the JSON answer.
fn post_json(
    p: &Params,
    url: &Url,
    body: &serde_json::Value,
    stats: &mut Stats,
) -> Result<serde_json::Value, StageError> {
    let body = serde_json::to_vec(body).map_err(|e| StageError::failed(format!("encoding the request: {e}")))?;
    let headers = [("content-type", "application/json"), ("accept", "application/json")];
    let response = with_retries(p, stats, url, || client::send("POST", url, &headers, Some(&body)))?;
    serde_json::from_slice(&response.body).map_err(|e| {
        StageError::failed(format!(
            "{url} answered {} with a body that is not JSON ({e}): {}",
            response.status,
            api::server_message(&response.body)
        ))
    })
}

/// GETs an image URL from a response, with retries.
fn download(p: &Params, link: &str, stats: &mut Stats) -> Result<Vec<u8>, StageError> {
    let url =
        Url::parse(link).map_err(|e| StageError::failed(format!("the service returned an unusable image URL: {e}")))?;
    let response = with_retries(p, stats, &url, || client::send("GET", &url, &[("accept", "image/*")], None))?;
    Ok(response.body)
}

/// One logical request: attempts until success, a final answer, or
/// `max_retries` retries spent.
fn with_retries(
    p: &Params,
    stats: &mut Stats,
    url: &Url,
    mut send: impl FnMut() -> Result<client::Response, TransportError>,
) -> Result<client::Response, StageError> {
    stats.requests += 1;
    let mut last_problem = String::new();
    for attempt in 1..=p.max_retries + 1 {
        stats.attempts += 1;
        let wait = match send() {
            Err(TransportError::Denied { host }) => {
                return Err(StageError::invalid_input(format!(
                    "outgoing HTTP to {host} was refused by the host: {host} is not on this stage's allowlist \
                     (operators grant hosts per stage)"
                )))
            }
            Err(TransportError::Failed(problem)) => {
                last_problem = problem;
                retry::backoff(attempt, p.backoff_ms)
            }
            Ok(response) => match retry::classify(response.status) {
                retry::Class::Success => return Ok(response),
                retry::Class::Rejected => {
                    return Err(StageError::invalid_input(format!(
                        "{url} refused the request ({}): {}",
                        response.status,
                        api::server_message(&response.body)
                    )))
                }
                retry::Class::Unauthorized => {
                    return Err(StageError::failed(format!(
                    "{url} refused the credentials ({}): {}; check the API key in the host's HTTP grant for this stage",
                    response.status,
                    api::server_message(&response.body)
                )))
                }
                retry::Class::Unexpected => {
                    return Err(StageError::failed(format!(
                        "{url} answered with unexpected status {}: {}",
                        response.status,
                        api::server_message(&response.body)
                    )))
                }
                retry::Class::Retry => {
                    last_problem =
                        format!("{url} answered {}: {}", response.status, api::server_message(&response.body));
                    retry::retry_after(response.header("retry-after").as_deref())
                        .unwrap_or_else(|| retry::backoff(attempt, p.backoff_ms))
                }
            },
        };
        if attempt <= p.max_retries {
            log::warn(&format!("attempt {attempt} failed ({last_problem}); retrying in {} ms", wait.as_millis()));
            stats.retries += 1;
            std::thread::sleep(wait);
        }
    }
    Err(StageError::unavailable(format!(
        "gave up after {} attempts ({} retries): {last_problem}",
        p.max_retries + 1,
        p.max_retries
    )))
}

/// The format and size of an image, after decoding it fully.
fn check_image(bytes: &[u8]) -> Result<(stagecraft_sdk::images::Format, u32, u32), String> {
    use stagecraft_sdk::images::Format;
    let format = match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => Format::Png,
        Ok(image::ImageFormat::Jpeg) => Format::Jpeg,
        Ok(other) => return Err(format!("{other:?} images are not supported (PNG or JPEG only)")),
        Err(_) => return Err(format!("not a PNG or JPEG image ({} bytes)", bytes.len())),
    };
    let decoded =
        image::load_from_memory(bytes).map_err(|e| format!("the {} does not decode: {e}", format.media_type()))?;
    Ok((format, decoded.width(), decoded.height()))
}

#[cfg(target_arch = "wasm32")]
export_stage!(GenerateHttp);

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: serde_json::Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let p = params(json!({"prompt": "a cat"}));
        assert_eq!(p.api, Api::Openai);
        assert_eq!(validate(&p).unwrap(), (Some(1024), Some(1024)));
        assert!(validate(&params(json!({"prompt": " "}))).is_err());
        assert!(validate(&params(json!({"prompt": "x", "n": 11}))).is_err());
        assert!(validate(&params(json!({"prompt": "x", "size": "big"}))).is_err());
        assert_eq!(validate(&params(json!({"prompt": "x", "size": "auto"}))).unwrap(), (None, None));
        assert!(serde_json::from_value::<Params>(json!({"prompt": "x", "api_key": "k"})).is_err(), "no key param");
    }

    #[test]
    fn rejects_non_images() {
        assert!(check_image(b"hello").unwrap_err().contains("not a PNG"));
        let mut png = Vec::new();
        image::RgbImage::new(3, 2).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        assert_eq!(check_image(&png).unwrap().1, 3);
        assert!(check_image(&png[..png.len() / 2]).is_err(), "a truncated PNG does not decode");
    }
}
