#!/usr/bin/env python3
"""The benchmark's helper (stdlib only), used by peers.sh and counts.sh.

  tool.py jwt SUB TTL [SECRET [ALG]]
      prints an HS256 token: header {"alg":ALG,"typ":"JWT"}, claims
      {"sub","iat","exp": now + TTL}; ALG only changes the header (the
      signature is always HMAC-SHA256), so "HS512" tests the alg check.
  tool.py smoke WL PORT
      checks that the gateway on 127.0.0.1:PORT keeps the contract of
      workload WL (W1..W7, see scripts/bench/README.md); prints one line per
      broken rule and exits 1, or prints nothing and exits 0.
  tool.py client PORT CONNS WL
      the fixed-count client of counts.sh: opens CONNS keep-alive
      connections, says READY, then for each stdin line "RUN n" sends exactly
      n requests (one in flight per connection) and says "DONE ok bad
      [status:count ...]" (the answers other than 2xx/3xx);
      "QUIT" or EOF ends it.
  tool.py where N A B [A2 B2]
      where the instructions go, from the callgrind dumps counts.sh keeps
      (KEEP_RUN=1): each function's own Ir per request, (B - A) / N, of
      one workload's pair of dumps A, B; with a second pair, both columns
      and their difference, largest first (e.g. W4 against W1: what the
      hooks cost, function by function). Needs callgrind_annotate.

  tool.py w7body FILE
      writes W7's origin answer: 8 KiB of JSON orders (text that gzip
      level 1 makes ~5 times smaller).

  tool.py cidrs FILE GEO
      writes W6's allow-list: 10,000 IPv4 ranges that do not merge
      (10.a.b.0/25) and 127.0.0.0/8, one a line to FILE (moongate) and as
      nginx geo entries to GEO (nginx-lua).

Environment: BENCH_JWT_SECRET (the HS256 secret), BENCH_JWT (the token the
W2 client sends; minted here when unset), BENCH_W3_LIMIT (W3 smoke).
BENCH_API_KEY (W6's API key).
"""
import base64, hashlib, hmac, http.client, json, os, random, re, selectors, socket, subprocess, sys, time

SECRET = os.environ.get("BENCH_JWT_SECRET", "moongate-bench-secret-0123456789abcdef")
W2_PATHS = ("/orders/123", "/payments/123", "/delivery/123")
# W6: the W2 chain behind key_auth, cors and ip (the key the gateways know
# by its SHA-256, the one origin they allow)
API_KEY = os.environ.get("BENCH_API_KEY", "moongate-bench-api-key-0123456789")
ORIGIN = "https://app.example.com"


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(sub, ttl, secret=SECRET, alg="HS256"):
    now = int(time.time())
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + int(ttl)},
                             separators=(",", ":")).encode())
    signing = ("%s.%s" % (head, body)).encode()
    return "%s.%s" % (signing.decode(), b64url(hmac.new(secret.encode(), signing, hashlib.sha256).digest()))


# ------------------------------------------------------------------ smoke
def get(port, path, headers=None, conn=None, method="GET"):
    """-> (status, lower-cased headers, body); conn reuses one connection"""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read().decode("latin-1")
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    if conn is None:
        c.close()
    return r.status, hdrs, body


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def smoke_w1(port):
    st, _, body = get(port, "/orders/123")
    if st != 200 or '"upstream"' not in body:
        yield "GET /orders/123 -> %d %r" % (st, body[:60])


def smoke_w2(port):
    ok = jwt("smoke-w2", 3600)
    for p in W2_PATHS:
        st, _, _ = get(port, p, bearer(ok))
        if st != 200:
            yield "valid token on %s -> %d, want 200" % (p, st)
    refused = {
        "no token": {},
        "signed with another secret": bearer(jwt("smoke-w2", 3600, "not-the-secret-" * 3)),
        "expired 60 s ago": bearer(jwt("smoke-w2", -60)),
        "header alg HS512": bearer(jwt("smoke-w2", 3600, SECRET, "HS512")),
        "last character cut": bearer(ok[:-1]),
    }
    for what, h in refused.items():
        st, _, _ = get(port, "/orders/123", h)
        if st != 401:
            yield "%s -> %d, want 401" % (what, st)
    st, _, _ = get(port, "/nope/1", bearer(ok))
    if st != 404:
        yield "unknown prefix /nope/1 -> %d, want 404" % st
    _, h, _ = get(port, "/payments/1", bearer(ok))
    if not h.get("x-seen-request-id", "").strip():
        yield "the upstream saw no X-Request-Id"
    seen = {get(port, "/delivery/%d" % i, bearer(ok))[1].get("x-upstream") for i in range(1, 5)}
    if seen != {"a", "b"}:
        yield "4 requests to /delivery reached %s, want both a and b" % sorted(map(str, seen))


def smoke_w3(port):
    limit = int(os.environ.get("BENCH_W3_LIMIT", "100"))
    h = bearer(jwt("smoke-w3-%d" % random.randrange(1 << 30), 3600))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    codes = [get(port, "/orders/%d" % i, h, c)[0] for i in range(150)]
    c.close()
    n200, n429 = codes.count(200), codes.count(429)
    if not (n200 >= 1 and n429 >= 1 and n200 <= 2 * limit):
        yield "150 back-to-back requests -> 200: %d, 429: %d (want both, 200s <= %d)" % (n200, n429, 2 * limit)


def smoke_w4(port):
    # two requests on one connection: the context must be the request's own
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    t, k = "t%d" % random.randrange(10000), "c%d" % random.randrange(10000)
    for tenant, client in (("acme", "bench"), (t, k)):
        st, h, _ = get(port, "/orders/123", {"X-Tenant": tenant, "X-Client": client}, c)
        got = (st, h.get("x-upstream"), h.get("x-seen-tenant-checked"), h.get("x-gateway-ctx"))
        want = (200, "a", tenant, tenant + "/" + client)
        if got != want:
            yield "X-Tenant %s: (status, X-Upstream, upstream saw X-Tenant-Checked, X-Gateway-Ctx) = %s, want %s" % (
                tenant, got, want)
    c.close()


def w6_headers(tok, key=API_KEY, origin=ORIGIN):
    h = bearer(tok)
    if key is not None:
        h["X-Api-Key"] = key
    if origin is not None:
        h["Origin"] = origin
    return h


def smoke_w6(port):
    ok = jwt("smoke-w6", 3600)
    for p in W2_PATHS:
        st, h, _ = get(port, p, w6_headers(ok))
        got = (st, h.get("access-control-allow-origin"), "origin" in h.get("vary", "").lower(),
               h.get("x-seen-api-key", ""))
        if got != (200, ORIGIN, True, ""):
            yield "%s: (status, Access-Control-Allow-Origin, Vary has Origin, upstream saw X-Api-Key) = %s, " \
                "want (200, %s, True, '')" % (p, got, ORIGIN)
    for what, h, want in (("no API key", w6_headers(ok, None), 401),
                          ("a wrong API key", w6_headers(ok, API_KEY + "x"), 401),
                          ("no token", {"X-Api-Key": API_KEY, "Origin": ORIGIN}, 401)):
        st, _, _ = get(port, "/orders/123", h)
        if st != want:
            yield "%s -> %d, want %d" % (what, st, want)
    st, h, _ = get(port, "/orders/123", w6_headers(ok, origin="https://evil.example"))
    if st != 200 or h.get("access-control-allow-origin"):
        yield "another origin -> %d with Access-Control-Allow-Origin %r, want 200 without" % (
            st, h.get("access-control-allow-origin"))
    st, h, _ = get(port, "/orders/123", {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
                   method="OPTIONS")
    if st not in (200, 204) or h.get("access-control-allow-origin") != ORIGIN:
        yield "preflight -> %d, Access-Control-Allow-Origin %r, want 204 and %s" % (
            st, h.get("access-control-allow-origin"), ORIGIN)


W7_PATH = "/text/orders"


def w7body():
    orders = [{"order": i, "state": "shipped", "lines": [{"sku": "A-%03d" % (i % 97), "qty": i % 5 + 1}],
               "cents": 1000 + i * 37, "note": "left at the door"} for i in range(80)]
    return json.dumps(orders, separators=(",", ":")).encode()[:8192]


def smoke_w7(port):
    import gzip as gz
    want = w7body()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", W7_PATH, headers={"Accept-Encoding": "gzip"})
    r = c.getresponse()
    raw = r.read()
    enc = r.getheader("Content-Encoding")
    c.close()
    if r.status != 200 or enc != "gzip":
        yield "GET %s (Accept-Encoding: gzip) -> %d, Content-Encoding %r, want 200 gzip" % (
            W7_PATH, r.status, enc)
        return
    if gz.decompress(raw) != want:
        yield "the gzip answer does not decode to the origin's %d bytes" % len(want)
    if len(raw) * 3 > len(want):
        yield "the gzip answer is %d bytes for %d: not compressed" % (len(raw), len(want))
    st, h, body = get(port, W7_PATH)
    if st != 200 or h.get("content-encoding") or body.encode("latin-1") != want:
        yield "without Accept-Encoding -> %d, Content-Encoding %r, want the identity" % (
            st, h.get("content-encoding"))


def smoke(wl, port):
    # W5 is W1 over a TLS upstream: the same answer
    fn = {"W1": smoke_w1, "W2": smoke_w2, "W3": smoke_w3, "W4": smoke_w4, "W5": smoke_w1,
          "W6": smoke_w6, "W7": smoke_w7}[wl]
    try:
        bad = list(fn(port))
    except (OSError, http.client.HTTPException) as e:
        bad = ["%s: %s" % (type(e).__name__, e)]
    for b in bad:
        print("%s: %s" % (wl, b))
    return 1 if bad else 0


# ------------------------------------------------------------------ client
def requests_for(wl, port):
    host = "Host: 127.0.0.1:%d\r\n" % port
    if wl == "W1":
        extra, paths = "", W2_PATHS[:1]
    elif wl == "W4":
        extra, paths = "X-Tenant: acme\r\nX-Client: bench\r\n", W2_PATHS[:1]
    elif wl == "W2":
        tok = os.environ.get("BENCH_JWT") or jwt("consumer-count", 36000)
        extra, paths = "Authorization: Bearer %s\r\n" % tok, W2_PATHS
    elif wl == "W6":
        tok = os.environ.get("BENCH_JWT") or jwt("consumer-count", 36000)
        extra = "Authorization: Bearer %s\r\nX-Api-Key: %s\r\nOrigin: %s\r\n" % (tok, API_KEY, ORIGIN)
        paths = W2_PATHS
    else:
        sys.exit("client: no fixed-count load for " + wl)
    return [("GET %s HTTP/1.1\r\n%s%s\r\n" % (p, host, extra)).encode() for p in paths]


def complete(buf):
    """length of the first whole response in buf and its status, or None"""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].split(b"\r\n")
    status, length, chunked = int(lines[0].split()[1]), 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        last = buf.find(b"\r\n0\r\n\r\n", end)
        return None if last < 0 else (last + 7, status)
    return (end + 4 + length, status) if len(buf) >= end + 4 + length else None


def client(port, conns, wl):
    reqs = requests_for(wl, port)
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    nxt = [0]

    def send(s):
        s.sendall(reqs[nxt[0] % len(reqs)])   # a few hundred bytes: never blocks
        nxt[0] += 1

    def run(n):
        left, buf, ok, bad, codes = {}, {}, 0, 0, {}
        for i, s in enumerate(socks):
            left[s] = n // conns + (1 if i < n % conns else 0)
            buf[s] = b""
            if left[s]:
                left[s] -= 1
                send(s)
                sel.register(s, selectors.EVENT_READ)
        busy = sum(1 for s in socks if s in sel.get_map())
        while busy:
            for key, _ in sel.select():
                s = key.fileobj
                data = s.recv(65536)
                if not data:
                    sys.exit("client: the gateway closed a connection")
                buf[s] += data
                while True:
                    r = complete(buf[s])
                    if not r:
                        break
                    buf[s] = buf[s][r[0]:]
                    if 200 <= r[1] < 400:
                        ok += 1
                    else:
                        bad += 1
                        codes[r[1]] = codes.get(r[1], 0) + 1
                    if left[s]:
                        left[s] -= 1
                        send(s)
                    else:
                        sel.unregister(s)
                        busy -= 1
        return ok, bad, " ".join("%d:%d" % kv for kv in sorted(codes.items()))

    print("READY", flush=True)
    for line in sys.stdin:
        w = line.split()
        if not w or w[0] == "QUIT":
            break
        if w[0] == "RUN":
            print("DONE %d %d %s" % run(int(w[1])), flush=True)


def self_costs(dump):
    """{function: own Ir} of one callgrind dump."""
    cmd = ["callgrind_annotate", "--threshold=100", "--inclusive=no", "--auto=no", dump]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    costs, total = {}, None
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if not m:
            continue
        ir, name = int(m.group(1).replace(",", "")), m.group(2).strip()
        if name == "PROGRAM TOTALS":
            total = ir
        # "Ir (pct) file:function [object]"; "=>" lines are calls, and the
        # threads' entry functions (clone, start_thread, worker_main) come
        # with the whole thread's cost when a dump is taken mid-run
        elif ":" in name and not name.startswith("=>") and not (total and ir > 0.9 * total):
            costs[name] = costs.get(name, 0) + ir
    return costs


def where(n, dumps):
    pairs = []
    for a, b in zip(dumps[0::2], dumps[1::2]):
        ca, cb = self_costs(a), self_costs(b)
        pairs.append({k: (cb.get(k, 0) - ca.get(k, 0)) / n for k in set(ca) | set(cb)})
    first = pairs[0]
    second = pairs[1] if len(pairs) > 1 else None
    if second is None:
        rows = sorted(first, key=lambda k: -first[k])
        print("%9s  %s" % ("Ir/req", "function [object]"))
        for k in rows[:60]:
            print("%9.0f  %s" % (first[k], k))
        print("%9.0f  total" % sum(first.values()))
        return
    keys = set(first) | set(second)
    rows = sorted(keys, key=lambda k: -abs(second.get(k, 0) - first.get(k, 0)))
    print("%9s %9s %9s  %s" % ("first", "second", "diff", "function [object]"))
    for k in rows[:60]:
        x, y = first.get(k, 0), second.get(k, 0)
        print("%9.0f %9.0f %9.0f  %s" % (x, y, y - x, k))
    x, y = sum(first.values()), sum(second.values())
    print("%9.0f %9.0f %9.0f  total" % (x, y, y - x))


def cidrs(path, geo):
    ranges = ["10.%d.%d.0/25" % (i // 256, i % 256) for i in range(10000)] + ["127.0.0.0/8"]
    with open(path, "w") as f:
        f.write("".join(r + "\n" for r in ranges))
    with open(geo, "w") as f:
        f.write("".join("%s 1;\n" % r for r in ranges))


def main(a):
    if a[:1] == ["cidrs"] and len(a) == 3:
        cidrs(a[1], a[2])
    elif a[:1] == ["w7body"] and len(a) == 2:
        os.makedirs(os.path.dirname(a[1]), exist_ok=True)
        with open(a[1], "wb") as f:
            f.write(w7body())
    elif a[:1] == ["jwt"] and len(a) >= 3:
        print(jwt(a[1], int(a[2]), *a[3:5]))
    elif a[:1] == ["smoke"] and len(a) == 3:
        sys.exit(smoke(a[1], int(a[2])))
    elif a[:1] == ["client"] and len(a) == 4:
        client(int(a[1]), int(a[2]), a[3])
    elif a[:1] == ["where"] and len(a) in (4, 6):
        where(int(a[1]), a[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
