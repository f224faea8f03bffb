#!/usr/bin/python3
"""A stand-in OpenTelemetry collector for specs: takes OTLP/HTTP JSON
exports (POST /v1/traces) and keeps them.

  --port N      listen on 127.0.0.1:N
  --delay S     sleep S seconds before answering each export (a slow
                collector)
  --status N    answer exports with status N (default 200)
  --tls-cert F --tls-key F   speak HTTPS (the bodies are kept the same)

GET /__received answers {"posts": [{"path", "content_type", "headers",
"body"}, ...]} with every export so far, the body decoded (or null when it
was not JSON, with "raw" then); GET /__count answers {"posts": n, "spans":
m, "started": k} (k: exports read, answered or not yet). Prints "ready"
once listening.
"""
import argparse
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
posts = []
nspans = 0
started = 0


def count_spans(body):
    n = 0
    for rs in (body or {}).get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            n += len(ss.get("spans", []))
    return n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with lock:
            if self.path == "/__received":
                return self.answer(200, {"posts": posts})
            if self.path == "/__count":
                return self.answer(200, {"posts": len(posts), "spans": nspans,
                                         "started": started})
        self.answer(404, {})

    def do_POST(self):
        global nspans, started
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        with lock:
            started += 1
        if ARGS.delay:
            time.sleep(ARGS.delay)
        entry = {"path": self.path, "content_type": self.headers.get("Content-Type"),
                 "headers": {k.lower(): v for k, v in self.headers.items()}}
        try:
            entry["body"] = json.loads(raw)
        except ValueError:
            entry["body"], entry["raw"] = None, raw.decode("latin-1")
        with lock:
            posts.append(entry)
            nspans += count_spans(entry["body"])
        self.answer(ARGS.status, {})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay", type=float, default=0)
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    ARGS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    if ARGS.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()
