"""A synchronous HTTP client over `wasi:http/outgoing-handler` (world `http-stage`).

    from stagecraft_sdk import http
    r = http.request("POST", "https://api.example.com/v1/x", json={"a": 1}, timeout=60)
    r.status, r.headers["content-type"], r.body, r.json()

The host decides which hosts a stage may reach (`--http-grant STAGE=HOST`)
and adds the stage's API key as a bearer token when one is configured.
Transport failures raise `HttpError`: `HttpUnavailable` (an `Unavailable`,
retried by the scheduler) for connection refused, timeouts and resets;
`HttpFailed` (a `Failed`) for a refused grant or a malformed request.
Uncaught, they become the matching `stage-error`.
"""

import json as _json
from urllib.parse import urlsplit

from . import _host
from .errors import Failed, Unavailable

try:
    from wit_world.imports import outgoing_handler, streams
    from wit_world.imports import wasi_http_types as wt
    from wit_world.imports import monotonic_clock, poll
    from componentize_py_types import Err, Ok
    AVAILABLE = True
except ImportError:  # world `stage`, or plain CPython
    AVAILABLE = False

__all__ = ["request", "get", "post", "Response", "HttpError", "HttpUnavailable", "HttpFailed", "AVAILABLE"]

# A hosted model answers in a few MiB at most; more is a runaway response.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class HttpError(Exception):
    """A request that got no HTTP response (any status is a response, not this)."""


class HttpUnavailable(HttpError, Unavailable):
    """Transient: the service may answer later."""


class HttpFailed(HttpError, Failed):
    """Permanent: retrying the same request will not help."""


class Response:
    def __init__(self, status: int, headers: dict, body: bytes, url: str):
        self.status = status
        self.headers = headers  # lower-case names; repeated headers joined with ", "
        self.body = body
        self.url = url

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise HttpFailed("the response from %s is not JSON (%s): %r" % (self.url, e, self.body[:200])) from None

    def __repr__(self) -> str:
        return "<Response %d from %s, %d bytes>" % (self.status, self.url, len(self.body))


def _need_http() -> None:
    if not AVAILABLE:
        raise Failed("HTTP is not available: this stage was built for world 'stage'; "
                     "set world = \"http-stage\" in stagecraft.toml (componentize-py -w http-stage) to make requests")


_METHODS = {}
if AVAILABLE:
    _METHODS = {"GET": wt.Method_Get, "HEAD": wt.Method_Head, "POST": wt.Method_Post, "PUT": wt.Method_Put,
                "DELETE": wt.Method_Delete, "OPTIONS": wt.Method_Options, "PATCH": wt.Method_Patch}

# ErrorCode variants the scheduler should retry; everything else is permanent.
_TRANSIENT = ("DnsTimeout", "DnsError", "DestinationNotFound", "DestinationUnavailable", "ConnectionRefused",
              "ConnectionTerminated", "ConnectionTimeout", "ConnectionReadTimeout", "ConnectionWriteTimeout",
              "ConnectionLimitReached", "HttpResponseIncomplete", "HttpResponseTimeout")
_WORDS = {"ConnectionRefused": "connection refused", "ConnectionTimeout": "connection timed out",
          "ConnectionTerminated": "connection closed by the server", "HttpResponseTimeout": "no response in time",
          "ConnectionReadTimeout": "read timed out", "DnsTimeout": "DNS lookup timed out",
          "DnsError": "DNS lookup failed", "DestinationNotFound": "host not found",
          "HttpResponseIncomplete": "incomplete response", "HttpProtocolError": "HTTP protocol error",
          "TlsCertificateError": "TLS certificate error", "TlsProtocolError": "TLS protocol error"}


def _code_error(code, method: str, url: str, authority: str) -> HttpError:
    kind = type(code).__name__.replace("ErrorCode_", "")
    if kind == "HttpRequestDenied":
        return HttpFailed("%s %s: the host refused the request: %s is not granted to this stage "
                          "(the operator grants it with --http-grant %s=%s)" % (method, url, authority, _host.STAGE_NAME, authority))
    detail = _WORDS.get(kind, kind)
    value = getattr(code, "value", None)
    if isinstance(value, str) and value:
        detail += ": " + value
    cls = HttpUnavailable if kind in _TRANSIENT else HttpFailed
    return cls("%s %s: %s" % (method, url, detail))


def _drop(resource) -> None:
    """Releases a wasi resource now (children must go before their parents)."""
    if resource is not None:
        resource.__exit__(None, None, None)


def _wait(pollable_owner, deadline_ns, what: str, method: str, url: str):
    """Blocks until `pollable_owner` is ready or the deadline passes."""
    p = pollable_owner.subscribe()
    try:
        if deadline_ns is None:
            p.block()
            return
        remaining = deadline_ns - monotonic_clock.now()
        if remaining <= 0:
            raise HttpUnavailable("%s %s: timed out %s" % (method, url, what))
        timer = monotonic_clock.subscribe_duration(remaining)
        try:
            ready = poll.poll([p, timer])
        finally:
            _drop(timer)
        if 0 not in ready:
            raise HttpUnavailable("%s %s: timed out %s" % (method, url, what))
    finally:
        _drop(p)


def request(method: str, url: str, headers=None, body=None, json=None, timeout: float = 60.0) -> Response:
    """Sends one request and reads the whole response (synchronously).

    `headers`: dict or list of (name, value); `body`: bytes or str; `json`:
    a value sent as `application/json`; `timeout`: seconds for the whole
    exchange (None: the host's limits only). Any status is returned (check
    `.status`); `HttpError` only when no response came.
    """
    _need_http()
    method = method.upper()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpFailed("invalid URL %r: expected http(s)://host/path" % url)
    if parts.username or parts.password:
        raise HttpFailed("invalid URL %r: credentials in URLs are not sent; use a header" % url)
    authority = parts.netloc
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")

    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if json is not None:
        if body is not None:
            raise ValueError("pass body or json, not both")
        body = _json.dumps(json).encode("utf-8")
        if not any(k.lower() == "content-type" for k, _ in items):
            items.append(("content-type", "application/json"))
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body is not None and not any(k.lower() == "content-length" for k, _ in items):
        items.append(("content-length", str(len(body))))
    try:
        fields = wt.Fields.from_list([(str(k), str(v).encode("utf-8")) for k, v in items])
    except Err as e:
        raise HttpFailed("%s %s: invalid request header (%s)" % (method, url, type(e.value).__name__)) from None

    req = wt.OutgoingRequest(fields)
    req.set_method(_METHODS[method]() if method in _METHODS else wt.Method_Other(method))
    req.set_scheme(wt.Scheme_Https() if parts.scheme == "https" else wt.Scheme_Http())
    req.set_authority(authority)
    req.set_path_with_query(path)
    outgoing = req.body()

    options = wt.RequestOptions()
    deadline = None
    if timeout is not None:
        ns = int(timeout * 1e9)
        deadline = monotonic_clock.now() + ns
        for setter in (options.set_connect_timeout, options.set_first_byte_timeout, options.set_between_bytes_timeout):
            try:  # best effort: a host may not support a setting
                setter(ns)
            except Err:
                pass

    try:
        future = outgoing_handler.handle(req, options)
    except Err as e:
        raise _code_error(e.value, method, url, authority) from None

    # A request the host refuses closes the body stream; the reason is in
    # the response future, so a body error counts only if it has none.
    body_error = None
    stream = outgoing.write()
    try:
        _write_all(stream, body or b"")
    except Err as e:
        body_error = HttpUnavailable("%s %s: sending the body failed (%s)" % (method, url, _stream_error(e.value)))
    finally:
        _drop(stream)
    try:
        wt.OutgoingBody.finish(outgoing, None)
    except Err as e:
        body_error = body_error or _code_error(e.value, method, url, authority)

    try:
        _wait(future, deadline, "waiting for the response", method, url)
        result = future.get()
    finally:
        _drop(future)
    # option<result<result<incoming-response, error-code>>>
    if isinstance(result, Err):
        raise HttpFailed("%s %s: the response was already taken" % (method, url))
    inner = result.value if isinstance(result, Ok) else result
    if isinstance(inner, Err):
        raise _code_error(inner.value, method, url, authority)
    response = inner.value if isinstance(inner, Ok) else inner
    if body_error is not None:
        _drop(response)
        raise body_error

    status = response.status()
    names = {}
    hdrs = response.headers()
    for k, v in hdrs.entries():
        k = k.lower()
        v = bytes(v).decode("latin-1")
        names[k] = names[k] + ", " + v if k in names else v
    _drop(hdrs)
    incoming = response.consume()
    data = bytearray()
    stream = incoming.stream()
    try:
        while True:
            try:
                chunk = stream.blocking_read(256 * 1024)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise HttpUnavailable("%s %s: reading the response failed (%s)" % (method, url, _stream_error(e.value))) from None
            data += chunk
            if len(data) > MAX_RESPONSE_BYTES:
                raise HttpFailed("%s %s: the response is larger than %d MiB" % (method, url, MAX_RESPONSE_BYTES >> 20))
            if deadline is not None and monotonic_clock.now() > deadline:
                raise HttpUnavailable("%s %s: timed out reading the response" % (method, url))
    finally:
        _drop(stream)
    _drop(wt.IncomingBody.finish(incoming))
    _drop(response)
    return Response(status, names, bytes(data), url)


def _write_all(stream, data: bytes) -> None:
    """Writes as much as the stream takes at once (`check-write`), not a
    fixed 4 KiB per call: fewer host calls and fewer small TCP writes."""
    i = 0
    while i < len(data):
        n = stream.check_write()
        if n == 0:
            p = stream.subscribe()
            p.block()
            _drop(p)
            continue
        stream.write(data[i:i + n])
        i += n
    stream.blocking_flush()


def _stream_error(e) -> str:
    if isinstance(e, streams.StreamError_LastOperationFailed):
        return e.value.to_debug_string()
    return "stream closed"


def get(url: str, **kwargs) -> Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs) -> Response:
    return request("POST", url, **kwargs)
