#!/usr/bin/python3
"""An HTTP/2 client for the moongate integration specs, driven over a
control socket (Debian's python3-h2: run it with /usr/bin/python3).

    /usr/bin/python3 spec/support/h2_client.py --port P [--tls] [--ca FILE]
        [--sni NAME] [--window N]

connects to 127.0.0.1:P (h2c with prior knowledge, or h2 by ALPN over TLS,
verifying against --ca when given), listens on a control port of its own
and prints "ready CONTROL_PORT". One control connection then sends JSON
commands, one per line, and gets one JSON line back for each:

  {"op": "request", "method", "path", "authority", "scheme", "headers":
   [[name, value], ...], "body": text or "body_b64": base64, "end": bool
   (default true: END_STREAM after the body)}
      -> {"id": stream id}: sent; the answer is collected meanwhile
  {"op": "fetch", ... as "request", "timeout": s}
      -> what "wait" answers: the request and the wait for its answer
  {"op": "batch", "requests": [request, ...], "timeout": s, "max": n}
      -> {"results": [what "wait" answers, ...]}: a stream each, at most
         n (default: as many as the server allows) open at once; answered
         once every one ended
  {"op": "data", "id", "body" | "body_b64", "end": bool}
      -> {"ok": true}: more request body on a stream
  {"op": "reset", "id", "code"}           -> {"ok": true}: RST_STREAM
  {"op": "wait", "id", "timeout": s}
      -> {"id", "status", "headers": [[name, value]], "body_b64",
          "body_len", "trailers", "reset": code or null, "interim":
          [statuses]} once the stream ended or was reset, or
          {"error": "timeout"}
  {"op": "state"}
      -> {"goaway": code or null, "last_stream_id", "closed": bool,
          "settings": {name: value} as the server sent them}
  {"op": "close"}                         -> {"ok": true}, then it exits

Window (--window): the client's initial stream window (default 65535,
nghttp2's and h2's default); 0 with --no-read-body makes a reader that
never opens it (the zero-window slow reader of the specs).
"""

import argparse
import base64
import json
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class Stream:
    def __init__(self):
        self.status = None
        self.headers = []
        self.body = bytearray()
        self.trailers = []
        self.reset = None
        self.ended = False
        self.interim = []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--ca")
    ap.add_argument("--sni", default="localhost")
    ap.add_argument("--window", type=int, default=65535)
    ap.add_argument("--no-read-body", action="store_true")
    a = ap.parse_args()

    sock = socket.create_connection(("127.0.0.1", a.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if a.tls:
        ctx = ssl.create_default_context(cafile=a.ca) if a.ca else ssl._create_unverified_context()
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname=a.sni)
        if sock.selected_alpn_protocol() != "h2":
            print("error: ALPN chose %r" % sock.selected_alpn_protocol(), flush=True)
            return 1
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_inbound_headers=False,
        validate_outbound_headers=False, normalize_outbound_headers=False))
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: a.window,
        h2.settings.SettingCodes.ENABLE_PUSH: 0})
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    ctl = socket.socket()
    ctl.bind(("127.0.0.1", 0))
    ctl.listen(1)
    print("ready %d" % ctl.getsockname()[1], flush=True)
    cs, _ = ctl.accept()
    cs.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    streams = {}
    state = {"goaway": None, "last_stream_id": None, "closed": False, "settings": {}}
    cbuf = b""
    waiting = None  # (stream id, deadline)
    batch = None    # ([stream ids], deadline)

    def pump(data):
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            state["closed"] = True
            state["error"] = str(e)
            print("protocol error: %s" % e, file=sys.stderr, flush=True)
            return
        for e in events:
            sid = getattr(e, "stream_id", None)
            st = streams.get(sid) if sid else None
            if isinstance(e, h2.events.ResponseReceived) and st:
                st.status = int(dict(e.headers)[b":status"])
                st.headers = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in e.headers]
            elif isinstance(e, h2.events.InformationalResponseReceived) and st:
                st.interim.append(int(dict(e.headers)[b":status"]))
            elif isinstance(e, h2.events.TrailersReceived) and st:
                st.trailers = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in e.headers]
            elif isinstance(e, h2.events.DataReceived):
                if st:
                    st.body += e.data
                if not a.no_read_body:
                    conn.acknowledge_received_data(e.flow_controlled_length, sid)
            elif isinstance(e, h2.events.StreamEnded) and st:
                st.ended = True
            elif isinstance(e, h2.events.StreamReset) and st:
                st.reset = int(e.error_code)
                st.ended = True
            elif isinstance(e, h2.events.ConnectionTerminated):
                state["goaway"] = int(e.error_code)
                state["last_stream_id"] = e.last_stream_id
            elif isinstance(e, h2.events.RemoteSettingsChanged):
                for k, v in e.changed_settings.items():
                    try:
                        name = h2.settings.SettingCodes(k).name
                    except ValueError:
                        name = str(k)
                    state["settings"][name] = v.new_value

    def flush():
        out = conn.data_to_send()
        if out and not state["closed"]:
            try:
                sock.sendall(out)
            except OSError:
                state["closed"] = True

    def body_of(cmd):
        if "body_b64" in cmd:
            return base64.b64decode(cmd["body_b64"])
        return cmd.get("body", "").encode("latin-1")

    def answer(obj):
        cs.sendall((json.dumps(obj) + "\n").encode())

    def result(sid):
        st = streams[sid]
        return {"id": sid, "status": st.status, "headers": st.headers,
                "body_b64": base64.b64encode(bytes(st.body)).decode(), "body_len": len(st.body),
                "trailers": st.trailers, "reset": st.reset, "interim": st.interim}

    def open_stream(cmd):
        sid = conn.get_next_available_stream_id()
        streams[sid] = Stream()
        hdrs = [(":method", cmd.get("method", "GET")), (":path", cmd.get("path", "/")),
                (":scheme", cmd.get("scheme") or ("https" if a.tls else "http"))]
        if cmd.get("authority", "localhost") is not None:
            hdrs.append((":authority", cmd.get("authority", "localhost")))
        hdrs += [(n.lower(), v) for n, v in cmd.get("headers", [])]
        body = body_of(cmd)
        end = cmd.get("end", True)
        conn.send_headers(sid, [(n.encode("latin-1"), v.encode("latin-1")) for n, v in hdrs],
                          end_stream=end and not body)
        if body:
            send_data(sid, body, end)
        return sid

    def fill_batch():
        """Opens the batch's next streams, as many as the server allows."""
        if not batch:
            return
        ids, todo, _, most = batch
        most = min(most, conn.remote_settings.max_concurrent_streams)
        while todo and conn.open_outbound_streams < most:
            ids.append(open_stream(todo.pop(0)))
        flush()

    def handle(cmd):
        nonlocal waiting, batch
        op = cmd.get("op")
        if op == "batch":
            batch = ([], list(cmd["requests"]), time.time() + cmd.get("timeout", 10),
                     cmd.get("max", 1 << 30))
            fill_batch()
        elif op in ("request", "fetch"):
            sid = open_stream(cmd)
            flush()
            if op == "fetch":
                waiting = (sid, time.time() + cmd.get("timeout", 10))
            else:
                answer({"id": sid})
        elif op == "data":
            send_data(cmd["id"], body_of(cmd), cmd.get("end", True))
            flush()
            answer({"ok": True})
        elif op == "reset":
            conn.reset_stream(cmd["id"], cmd.get("code", 8))
            flush()
            answer({"ok": True})
        elif op == "wait":
            waiting = (cmd["id"], time.time() + cmd.get("timeout", 10))
        elif op == "state":
            answer(state)
        elif op == "close":
            answer({"ok": True})
            return False
        return True

    pending_data = []  # (sid, bytes, end) waiting for the flow-control window

    def send_data(sid, data, end):
        pending_data.append([sid, data, end])
        drain_data()

    def drain_data():
        while pending_data:
            sid, data, end = pending_data[0]
            try:
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0 and data:
                    return
                piece, rest = data[:room], data[room:]
                conn.send_data(sid, piece, end_stream=end and not rest)
            except h2.exceptions.StreamClosedError:
                pending_data.pop(0)  # reset or answered early: the rest is not wanted
                continue
            if rest:
                pending_data[0][1] = rest
            else:
                pending_data.pop(0)

    running = True
    while running:
        if batch:
            ids, todo, deadline, _ = batch
            fill_batch()
            if not todo and all(streams[i].ended for i in ids):
                answer({"results": [result(i) for i in ids]})
                batch = None
            elif time.time() > deadline or state["closed"]:
                answer({"error": "closed" if state["closed"] else "timeout"})
                batch = None
        if waiting:
            sid, deadline = waiting
            if streams[sid].ended:
                answer(result(sid))
                waiting = None
            elif time.time() > deadline or state["closed"]:
                answer({"error": "closed" if state["closed"] else "timeout"})
                waiting = None
        rl = [cs] + ([] if state["closed"] else [sock])
        r, _, _ = select.select(rl, [], [], 0.05)
        if sock in r or (a.tls and not state["closed"] and sock.pending()):
            try:
                data = sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                state["closed"] = True
            elif data:
                pump(data)
                drain_data()
                flush()
        if cs in r:
            chunk = cs.recv(65536)
            if not chunk:
                break
            cbuf += chunk
            while b"\n" in cbuf and running:
                line, cbuf = cbuf.split(b"\n", 1)
                running = handle(json.loads(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
