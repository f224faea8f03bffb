#!/usr/bin/env python3
"""Paced HTTP/1.1 load for specs: offers --rate requests per second for
--duration seconds over --conns keep-alive connections (spread over the
--port list, round robin) and prints one JSON object: counts by status, by
path and status, by the value of --count-header, socket errors, latency
(max, p50, p99) and, with --timeline, [t, path index, status, latency,
--count-header's value or "-"] per request (t from the start, seconds; "t0"
is the start's wall clock).

Request k is due at start + k / rate; a connection takes the next due
request when it is free, so the offered rate holds as long as answers come
back within conns / rate seconds. Paths in --path rotate per request.
--method and --body-size N send that method with an N-byte body
(Content-Length). With several ports, "ports" has each one's latency (p50,
p99, max) and count: connections spread over the ports round robin, so
every port sees the same moments of the run (the specs compare gateways
under the same load of the machine).
"""
import argparse
import asyncio
import json
import time


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, action="append", required=True)
    p.add_argument("--path", action="append", default=None)
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--conns", type=int, default=20)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--count-header", default=None)
    p.add_argument("--timeout", type=float, default=5)
    p.add_argument("--timeline", action="store_true")
    p.add_argument("--method", default="GET")
    p.add_argument("--body-size", type=int, default=0)
    return p.parse_args()


async def read_response(reader, count_header):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, close, counted = 0, False, False, None
    for line in lines[1:]:
        if ":" not in line:
            continue
        name, value = line.split(":", 1)
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.lower() == "close":
            close = True
        if count_header and name == count_header:
            counted = value
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close, counted


async def main():
    a = parse_args()
    paths = a.path or ["/"]
    count_header = a.count_header.lower() if a.count_header else None
    extra = "".join(h + "\r\n" for h in a.header)
    if a.body_size:
        extra += "Content-Length: %d\r\n" % a.body_size
    body = b"x" * a.body_size
    reqs = [("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (a.method, p, extra))
            .encode() + body for p in paths]
    total = int(a.rate * a.duration)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    start_wall = time.time() + 0.05
    state = {"next": 0}
    by_status, by_path, by_header = {}, [{} for _ in paths], {}
    lat, timeline = [], []
    lat_by_port = {p: [] for p in a.port}
    errors = {"count": 0, "kinds": {}}

    def take():
        k = state["next"]
        if k >= total:
            return None
        state["next"] = k + 1
        return k

    async def conn_loop(i):
        port = a.port[i % len(a.port)]
        reader = writer = None
        while True:
            k = take()
            if k is None:
                break
            due = start + k / a.rate
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
            pi = k % len(paths)
            t0 = loop.time()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", port), a.timeout)
                writer.write(reqs[pi])
                status, close, counted = await asyncio.wait_for(
                    read_response(reader, count_header), a.timeout)
            except Exception as e:  # counted, then a fresh connection
                kind = type(e).__name__
                errors["count"] += 1
                errors["kinds"][kind] = errors["kinds"].get(kind, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                if a.timeline:
                    timeline.append([round(t0 - start, 4), pi, 0,
                                     round(loop.time() - t0, 4)])
                continue
            dt = loop.time() - t0
            lat.append(dt)
            lat_by_port[port].append(dt)
            s = str(status)
            by_status[s] = by_status.get(s, 0) + 1
            by_path[pi][s] = by_path[pi].get(s, 0) + 1
            if count_header and status == 200:
                key = counted or "-"
                by_header[key] = by_header.get(key, 0) + 1
            if a.timeline:
                timeline.append([round(t0 - start, 4), pi, status, round(dt, 4),
                                 counted or "-"])
            if close:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    t_begin = time.time()
    await asyncio.gather(*(conn_loop(i) for i in range(a.conns)))
    elapsed = time.time() - t_begin
    lat.sort()

    def pct(q, lst=None):
        lst = lat if lst is None else lst
        return lst[min(len(lst) - 1, int(q * len(lst)))] if lst else 0

    for v in lat_by_port.values():
        v.sort()

    out = {
        "sent": total, "elapsed": elapsed, "t0": start_wall, "status": by_status,
        "paths": {p: by_path[i] for i, p in enumerate(paths)},
        "errors": errors["count"], "error_kinds": errors["kinds"],
        "max_latency": lat[-1] if lat else 0, "p50": pct(0.5),
        "p99": pct(0.99),
    }
    if len(a.port) > 1:
        out["ports"] = {str(p): {"count": len(v), "p50": pct(0.5, v), "p99": pct(0.99, v),
                                 "max": v[-1] if v else 0}
                        for p, v in lat_by_port.items()}
    if count_header:
        out["header"] = by_header
    if a.timeline:
        out["timeline"] = timeline
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
