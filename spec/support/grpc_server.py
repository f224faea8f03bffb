#!/usr/bin/python3
"""A real gRPC server for specs (Debian's python3-grpcio), its service
defined without protoc: generic handlers with bytes in and out.

Service demo.Echo:
  Unary(bytes) -> bytes              the request back; metadata "x-echo"
                                      comes back as initial metadata and
                                      "x-trailer" as trailing metadata;
                                      b"fail:CODE:MSG" aborts with that status;
                                      b"sleep:S" sleeps S seconds first
  Many(bytes "N:SIZE") -> stream     N messages of SIZE bytes (i % 251)
  Sum(stream bytes) -> bytes         the total length of the messages, as text
  Chat(stream) -> stream             each message back, upper-cased
  Hang(bytes) -> bytes               sleeps until cancelled; counts the
                                      cancellations it saw
Also demo.Echo/Stats (unary): JSON {cancelled, calls}; Secret and Limited
are Unary under other names (for routes with their own policies).
Prints "ready" once serving on --port.
"""
import argparse
import json
import threading
import time
from concurrent import futures

import grpc

STATE = {"cancelled": 0, "calls": 0}
LOCK = threading.Lock()


def count():
    with LOCK:
        STATE["calls"] += 1


def unary(req, ctx):
    count()
    md = dict(ctx.invocation_metadata())
    if "x-echo" in md:
        ctx.send_initial_metadata((("x-echo", md["x-echo"]),))
    if "x-trailer" in md:
        ctx.set_trailing_metadata((("x-trailer", md["x-trailer"]),))
    if req.startswith(b"fail:"):
        _, code, msg = req.decode().split(":", 2)
        ctx.abort(grpc.StatusCode[code], msg)
    if req.startswith(b"sleep:"):
        time.sleep(float(req[6:]))
    return req


def many(req, ctx):
    count()
    n, size = (int(x) for x in req.decode().split(":"))
    block = bytes(i % 251 for i in range(size))
    for _ in range(n):
        yield block


def total(it, ctx):
    count()
    return str(sum(len(m) for m in it)).encode()


def chat(it, ctx):
    count()
    for m in it:
        yield m.upper()


def hang(req, ctx):
    count()
    done = threading.Event()

    def gone():
        with LOCK:
            STATE["cancelled"] += 1
        done.set()
    ctx.add_callback(gone)
    done.wait(30)
    return b"late"


def stats(req, ctx):
    with LOCK:
        return json.dumps(STATE).encode()


def ident(x):
    return x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    a = p.parse_args()
    h = grpc.method_handlers_generic_handler("demo.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Many": grpc.unary_stream_rpc_method_handler(many, ident, ident),
        "Sum": grpc.stream_unary_rpc_method_handler(total, ident, ident),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, ident, ident),
        "Hang": grpc.unary_unary_rpc_method_handler(hang, ident, ident),
        "Stats": grpc.unary_unary_rpc_method_handler(stats, ident, ident),
        "Secret": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Limited": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
    })
    opts = [("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=opts)
    server.add_generic_rpc_handlers((h,))
    addr = "127.0.0.1:%d" % a.port
    if a.tls_cert:
        with open(a.tls_cert, "rb") as f:
            crt = f.read()
        with open(a.tls_key, "rb") as f:
            key = f.read()
        server.add_secure_port(addr, grpc.ssl_server_credentials(((key, crt),)))
    else:
        server.add_insecure_port(addr)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
