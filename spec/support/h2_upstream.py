#!/usr/bin/python3
"""An HTTP/2 upstream for specs (Debian's python3-h2): h2c with prior
knowledge, or h2 over TLS with ALPN (--tls-cert/--tls-key). One thread,
one selector, every connection and stream on it, so that flow control is
honoured both ways.

Paths:
  /echo            200, JSON: method, path, authority, scheme, headers
                   (lower-case name -> list of values), body_len, sha256
  /big?n=N         200, N bytes of the specs' pattern, sent as the
                   gateway's window allows; &slow=1: 16 KiB at a time
                   every 20 ms
  /slow?ms=M       200 after M ms ("slow")
  /trailers        200, body "with trailers", then trailers grpc-status: 0,
                   grpc-message: all%20good, x-checksum: abc
  /status?code=C   C, body "status C"
  /reset           the stream reset (INTERNAL_ERROR) before any answer
  /health          200 "ok" (503 with --unhealthy)

--max-streams N    SETTINGS_MAX_CONCURRENT_STREAMS (default 100)
--goaway-after N   on each connection, at its N-th request: GOAWAY with
                   the one before as the last stream processed; that
                   stream and later ones are never answered, the
                   connection closes once the ones it kept are done
A plain HTTP/1.1 control port (--control-port) answers GET /stats with
JSON: connections (accepted), open (connections open now), received
(requests whose HEADERS came), requests (answered), max_concurrent (most
streams open at once on one connection), refused (streams dropped by a
GOAWAY), te (the te values seen).
Prints "ready" once listening.
"""
import argparse
import hashlib
import heapq
import http.server
import json
import selectors
import socket
import ssl
import threading
import time
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.errors
import h2.settings
import hyperframe.frame

STATS = {"connections": 0, "open": 0, "received": 0, "requests": 0, "max_concurrent": 0, "refused": 0, "te": []}
LOCK = threading.Lock()


# the specs' pattern (spec/support/helpers.lua block()): 65536 bytes of
# i % 251, repeated
BLOCK = bytes(i % 251 for i in range(65536))
PATTERN = BLOCK * 3


class Stream:
    def __init__(self, sid, headers):
        self.sid = sid
        self.headers = headers
        self.body = hashlib.sha256()
        self.body_len = 0
        self.out = b""          # bytes waiting for the window
        self.out_end = False    # END_STREAM once `out` is sent
        self.trailers = None
        self.big_left = 0       # /big bytes not yet generated
        self.big_sent = 0
        self.slow = False
        self.done = False


class Conn:
    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        validate_inbound_headers=True)
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.streams = {}
        self.requests = 0
        self.last_kept = None   # GOAWAY sent: streams above it are dropped
        self.last_id = 0        # the last stream taken (for the GOAWAY)
        self.closed = False
        self.h2.local_settings = h2.settings.Settings(
            client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.args.max_streams})
        self.h2.initiate_connection()
        self.flush()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except (OSError, ssl.SSLError):
                self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        with LOCK:
            STATS["open"] -= 1
        try:
            self.server.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()

    def on_readable(self):
        try:
            data = self.sock.recv(65536)
        except ssl.SSLWantReadError:
            return
        except (OSError, ssl.SSLError):
            data = b""
        if not data:
            self.close()
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.close()
            return
        for ev in events:
            self.on_event(ev)
        self.pump()
        self.flush()
        self.maybe_finish()

    def on_event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            if self.last_kept is not None and ev.stream_id > self.last_kept:
                with LOCK:
                    STATS["refused"] += 1
                return  # not processed: the client retries it
            ga = self.server.args.goaway_after
            if ga and self.requests + 1 == ga:
                # the N-th request is the first one not processed (however
                # fast the client reads the GOAWAY, one stream is above it)
                self.last_kept = self.last_id
                with LOCK:
                    STATS["refused"] += 1
                # h2's close_connection() stops every stream: a graceful
                # GOAWAY goes as a raw frame, after what h2 has queued
                self.flush()
                try:
                    self.sock.sendall(hyperframe.frame.GoAwayFrame(
                        stream_id=0, last_stream_id=self.last_kept, error_code=0).serialize())
                except (OSError, ssl.SSLError):
                    self.close()
                return
            s = Stream(ev.stream_id, ev.headers)
            self.streams[ev.stream_id] = s
            self.last_id = ev.stream_id
            with LOCK:
                STATS["received"] += 1
                STATS["max_concurrent"] = max(STATS["max_concurrent"], len(self.streams))
                for n, v in ev.headers:
                    if n == "te":
                        STATS["te"].append(v)
            self.requests += 1
            # (the answer goes at StreamEnded, which h2 reports for this
            # HEADERS too when it ended the stream)
        elif isinstance(ev, h2.events.DataReceived):
            s = self.streams.get(ev.stream_id)
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if s:
                s.body.update(ev.data)
                s.body_len += len(ev.data)
        elif isinstance(ev, h2.events.StreamEnded):
            s = self.streams.get(ev.stream_id)
            if s:
                self.answer(s)
        elif isinstance(ev, h2.events.StreamReset):
            self.streams.pop(ev.stream_id, None)
        elif isinstance(ev, h2.events.TrailersReceived):
            pass

    def header(self, s, name):
        for n, v in s.headers:
            if n == name:
                return v
        return None

    def answer(self, s):
        path = self.header(s, ":path") or "/"
        u = urllib.parse.urlsplit(path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/reset":
            self.h2.reset_stream(s.sid, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
            self.streams.pop(s.sid, None)
            return
        if u.path == "/slow":
            self.server.later(int(q.get("ms", "100")) / 1000.0, lambda: self.send_simple(
                s, 200, b"slow"))
            return
        if u.path == "/big":
            s.big_left = int(q.get("n", "1048576"))
            s.slow = q.get("slow") == "1"
            self.h2.send_headers(s.sid, [(":status", "200"), ("content-type", "application/octet-stream")])
            s.out_end = True
            self.refill(s)
            return
        if u.path == "/trailers":
            self.h2.send_headers(s.sid, [(":status", "200"), ("content-type", "text/plain")])
            s.out = b"with trailers"
            s.trailers = [("grpc-status", "0"), ("grpc-message", "all%20good"),
                          ("x-checksum", "abc")]
            s.out_end = True
            return
        if u.path == "/health":
            bad = self.server.args.unhealthy
            self.send_simple(s, 503 if bad else 200, b"sick" if bad else b"ok")
            return
        if u.path == "/status":
            code = int(q.get("code", "200"))
            self.send_simple(s, code, b"status %d" % code)
            return
        hs = {}
        for n, v in s.headers:
            if not n.startswith(":"):
                hs.setdefault(n, []).append(v)
        body = json.dumps({
            "method": self.header(s, ":method"), "path": path,
            "authority": self.header(s, ":authority"), "scheme": self.header(s, ":scheme"),
            "headers": hs, "body_len": s.body_len, "sha256": s.body.hexdigest(),
            "name": self.server.args.name,
        }).encode()
        self.send_simple(s, 200, body, "application/json")

    def send_simple(self, s, code, body, ctype="text/plain"):
        if self.closed or s.sid not in self.streams:
            return
        self.h2.send_headers(s.sid, [(":status", str(code)), ("content-type", ctype),
                                     ("content-length", str(len(body)))])
        s.out = body
        s.out_end = True
        self.pump()
        self.flush()
        self.maybe_finish()

    def refill(self, s):
        # /big: keep about a window's worth generated ahead
        while s.big_left > 0 and len(s.out) < 262144:
            n = min(s.big_left, 65536)
            off = s.big_sent % 65536
            s.out += PATTERN[off:off + n]
            s.big_sent += n
            s.big_left -= n
            if s.slow:
                break

    def pump(self):
        if self.closed:
            return
        for s in list(self.streams.values()):
            if s.done:
                continue
            if s.big_left and not s.slow:
                self.refill(s)
            while s.out:
                try:
                    win = self.h2.local_flow_control_window(s.sid)
                except (h2.exceptions.StreamClosedError, KeyError):
                    s.done = True
                    break
                n = min(win, self.h2.max_outbound_frame_size, len(s.out))
                if s.slow:
                    n = min(n, 16384)
                if n <= 0:
                    break
                self.h2.send_data(s.sid, s.out[:n])
                s.out = s.out[n:]
                if s.slow:
                    break
                if s.big_left and len(s.out) < 65536:
                    self.refill(s)
            if s.slow and (s.out or s.big_left) and not getattr(s, "timer", False):
                s.timer = True

                def tick(st=s):
                    st.timer = False
                    self.refill(st)
                    self.pump()
                    self.flush()
                    self.maybe_finish()
                self.server.later(0.02, tick)
            if not s.out and not s.big_left and s.out_end and not s.done:
                if s.trailers:
                    self.h2.send_headers(s.sid, s.trailers, end_stream=True)
                else:
                    self.h2.end_stream(s.sid)
                s.done = True
                with LOCK:
                    STATS["requests"] += 1
        for sid in [k for k, v in self.streams.items() if v.done]:
            del self.streams[sid]

    def maybe_finish(self):
        if self.last_kept is not None and not self.streams and not self.closed:
            self.flush()
            self.close()


class Server:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.timers = []
        self.seq = 0
        self.ctx = None
        if args.tls_cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(args.tls_cert, args.tls_key)
            self.ctx.set_alpn_protocols(["h2"])
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", args.port))
        self.lsock.listen(512)
        self.lsock.setblocking(False)
        self.sel.register(self.lsock, selectors.EVENT_READ, None)

    def later(self, delay, fn):
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, fn))

    def accept(self):
        try:
            sock, _ = self.lsock.accept()
        except BlockingIOError:
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ctx:
            sock.settimeout(5)
            try:
                sock = self.ctx.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                return
            if sock.selected_alpn_protocol() != "h2":
                sock.close()
                return
        sock.setblocking(True)
        sock.settimeout(10)
        with LOCK:
            STATS["connections"] += 1
            STATS["open"] += 1
        c = Conn(self, sock)
        if not c.closed:
            self.sel.register(sock, selectors.EVENT_READ, c)

    def run(self):
        print("ready", flush=True)
        while True:
            timeout = None
            if self.timers:
                timeout = max(0, self.timers[0][0] - time.monotonic())
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    self.accept()
                else:
                    key.data.on_readable()
                    # TLS may hold decrypted bytes the selector cannot see
                    c = key.data
                    while not c.closed and hasattr(c.sock, "pending") and c.sock.pending():
                        c.on_readable()
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, fn = heapq.heappop(self.timers)
                fn()


class Control(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with LOCK:
            body = json.dumps(STATS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--name", default="h2")
    p.add_argument("--max-streams", type=int, default=100)
    p.add_argument("--goaway-after", type=int, default=0)
    p.add_argument("--unhealthy", action="store_true")  # /health answers 503
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args()
    ctl = http.server.ThreadingHTTPServer(("127.0.0.1", args.control_port), Control)
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    Server(args).run()


if __name__ == "__main__":
    main()
