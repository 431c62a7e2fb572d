#!/usr/bin/env python3
"""A loopback stand-in for an OpenAI-compatible chat-completions API, to test
caption_http for real (stdlib only).

    python3 fake_api.py --port 0 [--fail-first 1 --fail-status 429 --retry-after 1]

Prints `listening on 127.0.0.1:PORT` once ready. POST /v1/chat/completions
checks the request like the API does (model, messages, an image as a base64
`data:` URL, max_tokens) and answers a caption naming the image's size;
model `no-such-model` gets the API's 404 error body. The first
`--fail-first` requests get `--fail-status` (with `Retry-After` when given).
GET /stats returns the request counts as JSON.
"""

import argparse
import base64
import json
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"requests": 0, "failed": 0, "authorized": 0}
LOCK = threading.Lock()


def describe_image(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return "a %dx%d PNG image" % (w, h)
    if data[:2] == b"\xff\xd8":
        return "a JPEG image"
    return "an image"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every answer.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        sys.stderr.write("fake_api: " + fmt % args + "\n")

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, kind="invalid_request_error", headers=()):
        self.answer(status, {"error": {"message": message, "type": kind, "code": None}}, headers)

    def do_GET(self):
        if self.path == "/stats":
            with LOCK:
                self.answer(200, dict(STATE))
        else:
            self.error(404, "Unknown path %s" % self.path)

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            return self.error(404, "Unknown path %s" % self.path)
        with LOCK:
            STATE["requests"] += 1
            if self.headers.get("authorization", "").startswith("Bearer "):
                STATE["authorized"] += 1
            fail = STATE["failed"] < ARGS.fail_first
            if fail:
                STATE["failed"] += 1
        if fail:
            headers = [("retry-after", ARGS.retry_after)] if ARGS.retry_after else []
            if ARGS.fail_status == 429:
                return self.error(429, "Rate limit reached (fake)", "rate_limit_error", headers)
            return self.error(ARGS.fail_status, "The server is overloaded (fake)", "server_error", headers)
        try:
            req = json.loads(raw)
        except ValueError:
            return self.error(400, "We could not parse the JSON body of your request.")
        model = req.get("model")
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter")
        if model == "no-such-model":
            return self.error(404, "The model `%s` does not exist or you do not have access to it." % model)
        if not isinstance(req.get("max_tokens"), int) or req["max_tokens"] < 1:
            return self.error(400, "max_tokens must be a positive integer")
        try:
            content = req["messages"][0]["content"]
            text = next(p["text"] for p in content if p["type"] == "text")
            url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
            header, b64 = url.split(",", 1)
            assert header.startswith("data:image/") and header.endswith(";base64")
            image = base64.b64decode(b64, validate=True)
        except Exception as e:
            return self.error(400, "Invalid messages: %s" % e)
        caption = "A caption of %s (%d bytes) for: %s" % (describe_image(image), len(image), text)
        words = caption.split()[: req["max_tokens"]]
        self.answer(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": " ".join(words)}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)},
        })


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fail-first", type=int, default=0, help="answer the first N requests with --fail-status")
    ap.add_argument("--fail-status", type=int, default=429)
    ap.add_argument("--retry-after", default="", help="Retry-After value sent with a failure (seconds)")
    ARGS = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
