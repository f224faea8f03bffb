#!/usr/bin/python3
"""A real gRPC client for specs (Debian's python3-grpcio) calling
spec/support/grpc_server.py's demo.Echo through the gateway (h2c with prior
knowledge: an insecure channel). One scenario per run, one JSON object out:
{"ok": true, ...} or {"code": "NOT_FOUND", "details": "..."}.

    grpc_client.py --port P SCENARIO [--token T] [--count N] [--service S]
                   [--method M]
"""
import argparse
import json
import sys
import threading
import time

import grpc


def ident(x):
    return x


def out(**kw):
    print(json.dumps(kw), flush=True)


def failed(e):
    out(code=e.code().name, details=e.details(),
        trailing=dict(e.trailing_metadata() or ()))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("scenario")
    p.add_argument("--token")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--service", default="demo.Echo")
    p.add_argument("--method", default="Unary")
    a = p.parse_args()
    ch = grpc.insecure_channel("127.0.0.1:%d" % a.port, options=[
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20)])
    svc = "/" + a.service + "/"
    unary = ch.unary_unary(svc + "Unary", request_serializer=ident, response_deserializer=ident)
    md = (("authorization", "Bearer " + a.token),) if a.token else None
    s = a.scenario
    try:
        if s == "unary":
            resp, call = unary.with_call(b"hello", timeout=10, metadata=(
                ("x-echo", "e1"), ("x-trailer", "t1")))
            out(ok=True, body=resp.decode(), initial=dict(call.initial_metadata()),
                trailing=dict(call.trailing_metadata()), code=call.code().name)
        elif s == "secret":
            secret = ch.unary_unary(svc + "Secret", request_serializer=ident,
                                    response_deserializer=ident)
            out(ok=True, body=secret(b"s", timeout=10, metadata=md).decode())
        elif s == "repeat":
            call = ch.unary_unary(svc + a.method, request_serializer=ident,
                                  response_deserializer=ident)
            codes = []
            for _ in range(a.count):
                try:
                    call(b"r", timeout=10, metadata=md)
                    codes.append("OK")
                except grpc.RpcError as e:
                    codes.append(e.code().name)
            out(ok=True, codes=codes)
        elif s == "server_stream":
            many = ch.unary_stream(svc + "Many", request_serializer=ident,
                                   response_deserializer=ident)
            msgs = list(many(b"200:1000", timeout=10))
            good = all(m == bytes(i % 251 for i in range(1000)) for m in msgs)
            out(ok=True, count=len(msgs), good=good)
        elif s == "client_stream":
            total = ch.stream_unary(svc + "Sum", request_serializer=ident,
                                    response_deserializer=ident)
            out(ok=True, total=int(total(iter([b"x" * 10000] * 50), timeout=10)))
        elif s == "bidi":
            chat = ch.stream_stream(svc + "Chat", request_serializer=ident,
                                    response_deserializer=ident)
            # one at a time: each answer comes before the next message goes
            q, got = [], []
            ev = threading.Event()

            def gen():
                for w in (b"alpha", b"beta", b"gamma"):
                    q.append(w)
                    yield w
                    ev.wait(5)
                    ev.clear()
            for m in chat(gen(), timeout=10):
                got.append(m.decode())
                ev.set()
            out(ok=True, got=got)
        elif s == "deadline":
            t0 = time.monotonic()
            try:
                unary(b"sleep:3", timeout=0.5)
                out(ok=True)
            except grpc.RpcError as e:
                out(code=e.code().name, took=time.monotonic() - t0)
        elif s == "cancel":
            hang = ch.unary_unary(svc + "Hang", request_serializer=ident,
                                  response_deserializer=ident)
            fut = hang.future(b"h", timeout=20)
            time.sleep(0.5)
            fut.cancel()
            out(ok=True, cancelled=fut.cancelled())
        elif s == "stats":
            stats = ch.unary_unary(svc + "Stats", request_serializer=ident,
                                   response_deserializer=ident)
            out(ok=True, stats=json.loads(stats(b"", timeout=10)))
        elif s == "big":
            msg = bytes(i % 251 for i in range(65536)) * 64  # 4 MiB
            resp = unary(msg, timeout=30)
            out(ok=True, len=len(resp), same=resp == msg)
        elif s.startswith("fail:"):
            unary(s.encode(), timeout=10)
            out(ok=True)
        else:
            sys.exit("unknown scenario " + s)
    except grpc.RpcError as e:
        failed(e)


if __name__ == "__main__":
    main()
