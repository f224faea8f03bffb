#!/usr/bin/env python3
"""The compression spec's upstream and decoding client (Debian python3:
python3-brotli).

    compress_tool.py serve --port P
        prints "ready"; GET /t?size=N[&ctype=T][&chunked=1][&status=S]
        [&hdr=Name:Value ...] answers N bytes of text (body(N)), written in
        64 KiB pieces as they are made (a 50 MiB answer is never in memory;
        &rand=1: bytes that do not compress),
        with Content-Type T (default text/plain) and Content-Length unless
        chunked; /__count answers how many /t requests came.

    compress_tool.py get PORT PATH [ACCEPT_ENCODING] [METHOD]
        one request to 127.0.0.1:PORT; prints JSON {status, headers
        (lower-case name -> list), wire_len (body bytes received), body_len,
        body_sha256 (after decoding its Content-Encoding: gzip with Python's
        gzip/zlib, br with python3-brotli), expect_sha256 (of body(size=) of
        PATH, when it has one)}, decoding as it reads (streamed); with
        CT_PAUSE_AT=N and CT_PAUSE_FILE=F it stops reading after N bytes,
        says "paused" on stderr and reads on once F exists.

    compress_tool.py sha N
        prints the sha256 of body(N).
"""
import hashlib
import http.client
import json
import os
import random
import sys
import time
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LINE = b"moongate compresses this line of text, %08d, as it streams by.\n"


def body_pieces(n, piece=65536, rand=False):
    """body(n): deterministic text, in pieces; with rand, bytes that do not
    compress (a seeded generator's)."""
    if rand:
        g = random.Random(17)
        made = 0
        while made < n:
            take = min(piece, n - made)
            made += take
            yield g.randbytes(take)
        return
    i, made = 0, 0
    out = bytearray()
    while made < n:
        line = LINE % i
        i += 1
        out += line
        if len(out) >= piece:
            take = bytes(out[:min(piece, n - made)])
            made += len(take)
            yield take
            out = out[len(take):]
    return


def body_sha(n, rand=False):
    h = hashlib.sha256()
    for p in body_pieces(n, rand=rand):
        h.update(p)
    return h.hexdigest()


COUNT = [0]
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self.answer(head=True)

    def do_GET(self):
        self.answer(head=False)

    def answer(self, head):
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        if u.path == "/__count":
            b = str(COUNT[0]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)
            return
        with LOCK:
            COUNT[0] += 1
        size = int(q.get("size", ["0"])[0])
        status = int(q.get("status", ["200"])[0])
        chunked = q.get("chunked", ["0"])[0] == "1"
        self.send_response(status)
        self.send_header("Content-Type", q.get("ctype", ["text/plain"])[0])
        for hv in q.get("hdr", []):
            name, _, value = hv.partition(":")
            self.send_header(name, value)
        nobody = status in (204, 304)
        if chunked and not nobody:
            self.send_header("Transfer-Encoding", "chunked")
        elif not nobody:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        if head or nobody:
            return
        for p in body_pieces(size, rand=q.get("rand", ["0"])[0] == "1"):
            if chunked:
                self.wfile.write(b"%x\r\n" % len(p) + p + b"\r\n")
            else:
                self.wfile.write(p)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


def serve(port):
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()


def get(port, path, ae=None, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    hdrs = {}
    if ae is not None and ae != "-":
        hdrs["Accept-Encoding"] = ae
    else:
        hdrs["Accept-Encoding"] = "identity"
    c.request(method, path, headers=hdrs)
    r = c.getresponse()
    headers = {}
    for k, v in r.getheaders():
        headers.setdefault(k.lower(), []).append(v)
    enc = r.getheader("Content-Encoding")
    dec = None
    if enc == "gzip":
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif enc == "br":
        import brotli
        dec = brotli.Decompressor()
    h = hashlib.sha256()
    wire = n = 0
    # CT_PAUSE_AT=N CT_PAUSE_FILE=F: stop reading after N wire bytes, say
    # "paused" on stderr, go on once F exists (the gateway's memory is
    # measured while its client does not read)
    pause_at = int(os.environ.get("CT_PAUSE_AT", "-1"))
    while True:
        if 0 <= pause_at <= wire:
            pause_at = -1
            print("paused", file=sys.stderr, flush=True)
            while not os.path.exists(os.environ["CT_PAUSE_FILE"]):
                time.sleep(0.02)
        b = r.read(65536)
        if not b:
            break
        wire += len(b)
        if dec is not None:
            b = dec.decompress(b) if enc == "gzip" else dec.process(b)
        n += len(b)
        h.update(b)
    if enc == "gzip":
        tail = dec.flush()
        n += len(tail)
        h.update(tail)
        if not dec.eof:
            raise SystemExit("gzip stream not finished")
    elif enc == "br" and not dec.is_finished():
        raise SystemExit("brotli stream not finished")
    out = {"status": r.status, "headers": headers, "wire_len": wire, "body_len": n,
           "body_sha256": h.hexdigest()}
    q = parse_qs(urlsplit(path).query)
    if "size" in q:
        out["expect_sha256"] = body_sha(int(q["size"][0]), q.get("rand", ["0"])[0] == "1")
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[3]))
    elif sys.argv[1] == "sha":
        print(body_sha(int(sys.argv[2])))
    else:
        get(int(sys.argv[2]), sys.argv[3], *sys.argv[4:])
