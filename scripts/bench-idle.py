#!/usr/bin/env python3
"""Memory of idle keep-alive client connections.

Starts moongate (one worker) in front of a tiny local upstream, opens N client
connections, sends one request on each (so each is an idle keep-alive
connection afterwards), and reports how much the gateway's RSS grew.

With --http2 the connections speak HTTP/2 (h2c, prior knowledge, a listener
with http2 = true): the preface, SETTINGS both ways, one proxied GET on
stream 1, then silence; the frames are written by hand (stdlib only).
"""
import argparse, os, resource, signal, socket, subprocess, sys, tempfile, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload

# GET /x on stream 1, END_STREAM | END_HEADERS: HPACK with the static
# table only (:method GET, :scheme http, then :path and :authority as
# literals without indexing)
H2_GET = frame(1, 0x5, 1, bytes([0x82, 0x86, 0x04, 2]) + b"/x" + bytes([0x01, 5]) + b"bench")


def h2_request(s):
    """The preface, SETTINGS, one GET; returns 1 once its answer ended with
    :status 200 (HPACK static index 8), else 0. The server's SETTINGS are
    acknowledged first."""
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
    buf, acked, ok = b"", False, 0
    while True:
        data = s.recv(65536)
        if not data:
            return 0
        buf += data
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            ftype, flags, sid, payload = buf[3], buf[4], int.from_bytes(buf[5:9], "big"), buf[9:9 + n]
            buf = buf[9 + n:]
            if ftype == 4 and not flags & 1 and not acked:
                s.sendall(frame(4, 1, 0) + H2_GET)
                acked = True
            elif ftype == 1 and sid == 1:
                # a dynamic table size update (001xxxxx) may come first
                i = 0
                while i < len(payload) and payload[i] & 0xE0 == 0x20:
                    i += 1
                ok = 1 if payload[i:i + 1] == bytes([0x88]) else 0
                if flags & 1:
                    return ok
            elif ftype == 0 and sid == 1 and flags & 1:
                return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/moongate")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--http2", action="store_true")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.conns * 2 + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    gwp, upp = free_port(), free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    cfg.write(f"""local gw = require "moongate"
gw.settings {{ workers = 1, access_log = "off", admin = false, timeouts = {{ keepalive = 300 }} }}
gw.listen {{ port = {gwp}, host = "127.0.0.1", http2 = {"true" if a.http2 else "false"} }}
gw.upstream("up", {{ "127.0.0.1:{upp}" }})
gw.route {{ path = "/**", upstream = "up" }}
""")
    cfg.close()
    # the upstream is a second moongate process answering from Lua, so that
    # only the gateway's own connections count in its RSS
    ucfg = open(cfg.name + ".up.lua", "w")
    ucfg.write(f"""local gw = require "moongate"
gw.settings {{ workers = 1, access_log = "off", admin = false }}
gw.listen {{ port = {upp}, host = "127.0.0.1" }}
gw.route {{ path = "/**", handler = function() return 200, "ok" end }}
""")
    ucfg.close()
    up = subprocess.Popen([a.bin, "run", "-c", ucfg.name], stderr=subprocess.DEVNULL)
    p = subprocess.Popen([a.bin, "run", "-c", cfg.name], stderr=open(cfg.name + ".log", "w"))
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", gwp)).close(); break
            except OSError:
                if p.poll() is not None:
                    print("bench-idle: moongate did not start:\n" + open(cfg.name + ".log").read())
                    return 1
                time.sleep(0.05)
        # warm up: one proxied request
        s = socket.create_connection(("127.0.0.1", gwp))
        s.sendall(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n"); s.recv(4096); s.close()
        time.sleep(0.3)
        before = rss_kib(p.pid)
        socks, t0 = [], time.time()
        req = b"GET /x HTTP/1.1\r\nHost: bench\r\n\r\n"
        answered = 0
        for i in range(a.conns):
            s = socket.create_connection(("127.0.0.1", gwp))
            s.settimeout(10)
            if a.http2:
                answered += h2_request(s)
            else:
                s.sendall(req)
                if s.recv(4096).startswith(b"HTTP/1.1 200"):
                    answered += 1
            socks.append(s)
            if (i + 1) % 2000 == 0:
                print(f"  {i + 1} connections open", flush=True)
        time.sleep(0.5)
        after = rss_kib(p.pid)
        grow = (after - before) / 1024
        kind = "HTTP/2 connections" if a.http2 else "keep-alive connections"
        print(f"idle {kind}: {a.conns} open, {answered} answered 200; "
              f"RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB "
              f"(+{grow:.1f} MiB, {(after - before) * 1024 / a.conns:.0f} bytes/conn; "
              f"goal <= 40 MiB) in {time.time() - t0:.1f}s")
        for s in socks:
            s.close()
        return 0 if answered == a.conns and grow <= 40 else 1
    finally:
        up.kill()
        os.unlink(ucfg.name)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
        os.unlink(cfg.name)
        os.unlink(cfg.name + ".log")

if __name__ == "__main__":
    sys.exit(main())
