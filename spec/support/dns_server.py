#!/usr/bin/python3
"""A tiny DNS server for spec/c/dns_spec.lua: it answers A queries for
one name with fixed addresses, misbehaving first as --mode says, so that
the spec sees the stub resolver (src/dns.c) ignore what is not its answer
and retry what got none.

  --mode ok         answer every query
  --mode spoof      send a wrong-id answer, an answer from another question,
                    and one from another socket before the right one
  --mode drop-first ignore the first query (the client must retry)
  --mode silent     never answer (the client times out)
  --mode servfail   answer SERVFAIL

Prints "ready PORT" once listening; logs each query id to stderr.
"""
import argparse
import socket
import struct
import sys


def name_wire(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def parse_question(msg):
    qid = struct.unpack(">H", msg[:2])[0]
    at, labels = 12, []
    while msg[at]:
        n = msg[at]
        labels.append(msg[at + 1:at + 1 + n].decode())
        at += 1 + n
    qtype = struct.unpack(">H", msg[at + 1:at + 3])[0]
    return qid, ".".join(labels), qtype, msg[12:at + 5]


def answer(qid, question, addrs, rcode=0, ttl=7):
    flags = 0x8180 | rcode
    out = struct.pack(">HHHHHH", qid, flags, 1, len(addrs) if rcode == 0 else 0, 0, 0)
    out += question
    if rcode == 0:
        for a in addrs:
            out += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, ttl, 4) + socket.inet_aton(a)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--addr", action="append", default=[])
    args = ap.parse_args()
    addrs = args.addr or ["192.0.2.1"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    print("ready", s.getsockname()[1], flush=True)
    seen = 0
    while True:
        msg, peer = s.recvfrom(2048)
        qid, name, qtype, question = parse_question(msg)
        seen += 1
        print("query", qid, name, qtype, file=sys.stderr, flush=True)
        if args.mode == "silent" or (args.mode == "drop-first" and seen == 1):
            continue
        if args.mode == "servfail":
            s.sendto(answer(qid, question, [], rcode=2), peer)
            continue
        if args.mode == "spoof":
            s.sendto(answer((qid + 1) & 0xffff, question, ["203.0.113.66"]), peer)
            wrong_q = name_wire("evil.example") + question[-4:]
            s.sendto(answer(qid, wrong_q, ["203.0.113.67"]), peer)
            other.sendto(answer(qid, question, ["203.0.113.68"]), peer)
        s.sendto(answer(qid, question, addrs), peer)


if __name__ == "__main__":
    main()
