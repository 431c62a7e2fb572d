"""caption_http: captions images with a hosted vision model (OpenAI-compatible
`/v1/chat/completions`). One `captions.json` maps each input's name to its caption.

The host grants the API's host (`--http-grant caption_http=api.openai.com`)
and sends the key from `$STAGECRAFT_HTTP_CAPTION_HTTP_KEY` as a bearer token:
the stage never sees it.
"""

import base64
import email.utils
import time
from dataclasses import dataclass, field

from stagecraft_sdk import Failed, Input, InvalidInput, Output, Unavailable, http, log, progress, stage


@dataclass
class Params:
    """Hosted captioning options."""

    base_url: str = field(default="https://api.openai.com", metadata={
        "description": "Base URL of the OpenAI-compatible API", "pattern": "^https?://"})
    model: str = field(default="gpt-4o-mini", metadata={"description": "Vision model to ask", "minLength": 1})
    prompt: str = field(default="Describe this image in one sentence.", metadata={
        "description": "Instruction sent with each image", "minLength": 1})
    max_tokens: int = field(default=100, metadata={"description": "Most tokens per caption", "minimum": 1, "maximum": 4096})
    max_retries: int = field(default=3, metadata={
        "description": "Retries of a 429 or 5xx answer per image", "minimum": 0, "maximum": 10})
    backoff_ms: int = field(default=500, metadata={
        "description": "First retry delay, doubled each retry (a Retry-After header wins)", "minimum": 0, "maximum": 60000})
    timeout_s: float = field(default=120.0, metadata={"description": "Deadline of one request", "minimum": 1, "maximum": 600})


# The longest wait we accept from a Retry-After header: past it, fail over to the scheduler.
MAX_RETRY_AFTER_S = 60.0


def retry_delay(response: http.Response, attempt: int, backoff_ms: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based)."""
    value = response.headers.get("retry-after", "").strip()
    if value:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value else None
            if when is not None:
                return min(MAX_RETRY_AFTER_S, max(0.0, when.timestamp() - time.time()))
    return backoff_ms * (2 ** attempt) / 1000.0


def server_message(response: http.Response) -> str:
    """The API's own error text (`{"error": {"message": ...}}`), else the body's start."""
    try:
        err = response.json().get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except Exception:
        pass
    return response.text()[:300].strip() or "(empty body)"


def caption(p: Params, url: str, name: str, media_type: str, data: bytes, stats: dict) -> str:
    body = {
        "model": p.model,
        "max_tokens": p.max_tokens,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": p.prompt},
            {"type": "image_url", "image_url": {
                "url": "data:%s;base64,%s" % (media_type, base64.b64encode(data).decode("ascii"))}},
        ]}],
    }
    for attempt in range(p.max_retries + 1):
        try:
            r = http.post(url, json=body, timeout=p.timeout_s)
        except http.HttpUnavailable as e:
            raise Unavailable("caption of '%s': %s" % (name, e)) from None
        stats["requests"] += 1
        if r.status == 429 or r.status >= 500:
            if attempt == p.max_retries:
                raise Unavailable("caption of '%s': %s answered %d after %d retries: %s"
                                  % (name, url, r.status, p.max_retries, server_message(r)))
            delay = retry_delay(r, attempt, p.backoff_ms)
            log.warn("caption of '%s': HTTP %d, retry %d/%d in %.2f s" % (name, r.status, attempt + 1, p.max_retries, delay))
            stats["retries"] += 1
            time.sleep(delay)
            continue
        if r.status >= 400:
            raise Failed("caption of '%s': %s answered %d: %s" % (name, url, r.status, server_message(r)))
        reply = r.json()
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise Failed("caption of '%s': unexpected response from %s: %.200s" % (name, url, r.text())) from None
        if isinstance(content, list):  # content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        usage = reply.get("usage") or {}
        stats["tokens"] += int(usage.get("total_tokens") or 0)
        return str(content).strip()
    raise AssertionError("unreachable")


def run(input: Input[Params]) -> Output:
    p = input.params
    images = input.by_media_type("image/*")
    if not images:
        got = ", ".join("%s (%s)" % (a.name, a.media_type) for a in input.artifacts) or "none"
        raise InvalidInput("this stage needs at least one input image; got: %s" % got)
    url = p.base_url.rstrip("/") + "/v1/chat/completions"
    stats = {"requests": 0, "retries": 0, "tokens": 0}
    captions = {}
    for i, a in enumerate(images):
        captions[a.name] = caption(p, url, a.name, a.media_type, a.data, stats)
        progress((i + 1) / len(images), a.name)
    return (Output()
            .add("captions.json", "application/json", captions)
            .meta("count", len(captions)).meta("model", p.model)
            .meta("requests", stats["requests"]).meta("retries", stats["retries"]).meta("tokens", stats["tokens"]))


Stage = stage(run, Params, name="caption_http", version="0.1.0",
              description="Captions images with a hosted vision model (OpenAI-compatible chat completions)",
              accepts=["image/*"], produces=["application/json"], deterministic=False)
