#!/usr/bin/env python3
"""Sends one request per key through the gateway and says which upstream
answered each (its X-Upstream-Name), for the consistent-hashing specs:

    python3 spec/support/keys.py --port P --count N [--conns C] [--at PATH]
        (--header NAME | --cookie NAME | --query NAME | --path PREFIX)

Key i (1..N) is "user-i", sent to PATH (default "/k") as header NAME,
cookie NAME or query argument NAME, or as the path PREFIX/user-i. Requests go over C keep-alive
connections. Prints one JSON object: {"names": [name of key 1, ...],
"statuses": {status: count}}; a key without an answer has name null.
"""
import argparse
import asyncio
import json


def request_for(args, key):
    path, extra = args.at, ""
    if args.header:
        extra = "%s: %s\r\n" % (args.header, key)
    elif args.cookie:
        extra = "Cookie: theme=dark; %s=%s\r\n" % (args.cookie, key)
    elif args.query:
        path = "%s?a=1&%s=%s" % (args.at, args.query, key)
    elif args.path:
        path = "%s/%s" % (args.path, key)
    return ("GET %s HTTP/1.1\r\nHost: keys\r\n%s\r\n" % (path, extra)).encode()


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status, name, length = int(lines[0].split(" ", 2)[1]), None, 0
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "x-upstream-name":
            name = v.strip()
    await reader.readexactly(length)
    return status, name


async def worker(args, queue, names, statuses):
    reader = writer = None
    while True:
        try:
            i = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        for _ in range(3):  # a closed keep-alive connection: reconnect
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
                writer.write(request_for(args, "user-%d" % (i + 1)))
                status, name = await asyncio.wait_for(read_response(reader), 30)
                names[i] = name
                statuses[status] = statuses.get(status, 0) + 1
                break
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                if writer is not None:
                    writer.close()
                reader = writer = None
    if writer is not None:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--at", default="/k")
    p.add_argument("--header")
    p.add_argument("--cookie")
    p.add_argument("--query")
    p.add_argument("--path")
    args = p.parse_args()
    queue = asyncio.Queue()
    for i in range(args.count):
        queue.put_nowait(i)
    names, statuses = [None] * args.count, {}
    await asyncio.gather(*(worker(args, queue, names, statuses) for _ in range(args.conns)))
    print(json.dumps({"names": names, "statuses": statuses}))


if __name__ == "__main__":
    asyncio.run(main())
