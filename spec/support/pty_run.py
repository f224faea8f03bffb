#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal and drives it like a person would.

    pty_run.py STEPS.json -- command args...

STEPS is a JSON list of steps, done in order:
    ["send", "text"]      types text (no newline added; "\\t" is Tab)
    ["intr"]              presses Ctrl-C (the terminal sends SIGINT)
    ["eof"]               presses Ctrl-D
    ["expect", "text"]    waits until the screen output since the last expect
                          holds text (deadline: $PTY_TIMEOUT s, default 15)
    ["exit"]              waits for the process to end
Prints one JSON object: {"ok", "error", "output" (everything the terminal
showed, \\r removed), "status" (exit code or null), "signal" (or null)}.
Exits 0 unless the steps themselves could not be read. The terminal is
TERM=dumb (no cursor movement: what is typed and printed reads in order),
$PTY_TERM to try another.
"""
import json
import os
import pty
import select
import signal
import sys
import time

TIMEOUT = float(os.environ.get("PTY_TIMEOUT", "15"))


def main():
    steps = json.load(open(sys.argv[1]))
    argv = sys.argv[sys.argv.index("--") + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = os.environ.get("PTY_TERM", "dumb")
        os.execvp(argv[0], argv)
    out = bytearray()
    mark = 0  # where the next expect starts looking
    result = {"ok": True, "error": None, "status": None, "signal": None}

    def pump(wait):
        r, _, _ = select.select([fd], [], [], wait)
        if not r:
            return None  # nothing yet
        try:
            data = os.read(fd, 65536)
        except OSError:
            return False
        if not data:
            return False
        out.extend(data)
        return True

    def reap(block):
        flags = 0 if block else os.WNOHANG
        p, st = os.waitpid(pid, flags)
        if p == 0:
            return False
        if os.WIFEXITED(st):
            result["status"] = os.WEXITSTATUS(st)
        elif os.WIFSIGNALED(st):
            result["signal"] = os.WTERMSIG(st)
        return True

    done = False
    try:
        for step in steps:
            kind = step[0]
            if kind == "send":
                os.write(fd, step[1].encode())
            elif kind == "intr":
                os.write(fd, b"\x03")
            elif kind == "eof":
                os.write(fd, b"\x04")
            elif kind == "expect":
                want = step[1].encode()
                deadline = time.time() + TIMEOUT
                def seen():
                    return bytes(out).replace(b"\r", b"").find(want, mark)
                while seen() < 0:
                    if time.time() > deadline or pump(0.05) is False:
                        if seen() >= 0:
                            break
                        raise RuntimeError("no %r on the screen" % step[1])
                mark = seen() + len(want)
            elif kind == "exit":
                deadline = time.time() + TIMEOUT
                while not reap(False):
                    if time.time() > deadline:
                        raise RuntimeError("the process did not end")
                    pump(0.05)
                done = True
            # a short settle so that the program sees keys one step at a time
            pump(0.05)
    except RuntimeError as e:
        result["ok"] = False
        result["error"] = str(e)
    if not done:
        if not reap(False):
            os.kill(pid, signal.SIGKILL)
            reap(True)
    while pump(0) is True:
        pass
    result["output"] = out.decode("utf-8", "replace").replace("\r", "")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
