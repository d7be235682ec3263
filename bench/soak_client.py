#!/usr/bin/python3
"""The soak's own client (bench/soak.sh): an INCR loop on a counter that only it writes,
so every reply must be exactly one more than the last, plus reads of keys nobody writes
and idle connections held open across every upgrade. Counts every error; redials after
one (and counts that too). On SIGTERM it finishes the request in flight, checks the idle
connections and every fixed key, and writes its counts as JSON to --out.
"""
import argparse
import json
import random
import signal
import socket
import sys
import time


def fixed_value(i):
    v = "fixed-%d-" % i
    return (v + "y" * 100)[:100]


class Conn:
    """One RESP connection with a reply reader; every call has a deadline."""

    def __init__(self, port, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection mid-reply")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("error reply: " + rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError("unparseable reply line %r" % line[:80])

    def call(self, *args):
        self.send(*args)
        return self.reply()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", default="soak:counter")
    ap.add_argument("--fixed", type=int, default=10000, help="keys soak:fixed:0.. preloaded")
    ap.add_argument("--idle", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ready", required=True, help="touched once the loop runs")
    a = ap.parse_args()

    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))

    stats = {"acked_incr": 0, "unanswered_incr": 0, "reads": 0, "errors": 0,
             "reconnects": 0, "error_samples": [], "max_latency_ms": 0.0,
             "idle_ok": 0, "idle_total": a.idle, "fixed_bad": 0, "fixed_checked": 0}

    def error(what):
        stats["errors"] += 1
        if len(stats["error_samples"]) < 20:
            stats["error_samples"].append("%.3f %s" % (time.time(), what))

    idle = [Conn(a.port, a.timeout) for _ in range(a.idle)]
    conn = Conn(a.port, a.timeout)
    last = conn.call("GET", a.key)
    last = int(last) if last is not None else 0
    stats["start_value"] = last
    open(a.ready, "w").close()
    rng = random.Random(14)
    n = 0
    while not stop[0]:
        t0 = time.monotonic()
        try:
            if conn is None:
                conn = Conn(a.port, a.timeout)
                stats["reconnects"] += 1
                last = int(conn.call("GET", a.key) or 0)  # what the server has now
            n += 1
            if n % 16 == 0:
                i = rng.randrange(a.fixed)
                v = conn.call("GET", "soak:fixed:%d" % i)
                stats["reads"] += 1
                if v != fixed_value(i):
                    error("soak:fixed:%d read %r" % (i, v))
                continue
            conn.send("INCR", a.key)
            try:
                v = conn.reply()
            except Exception:
                stats["unanswered_incr"] += 1
                raise
            stats["acked_incr"] += 1
            if v != last + 1:
                error("INCR %s returned %r after %d" % (a.key, v, last))
            last = v if isinstance(v, int) else last
        except Exception as e:  # every failure is a client error
            error("%s: %s" % (type(e).__name__, e))
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.01)
        ms = (time.monotonic() - t0) * 1000
        if ms > stats["max_latency_ms"]:
            stats["max_latency_ms"] = round(ms, 3)

    # The idle connections must all still answer, and every fixed key be intact.
    for c in idle:
        try:
            if c.call("PING") == "PONG":
                stats["idle_ok"] += 1
            else:
                error("idle connection: PING not answered PONG")
        except Exception as e:
            error("idle connection: %s: %s" % (type(e).__name__, e))
        c.close()
    try:
        if conn is None:
            conn = Conn(a.port, a.timeout)
        for lo in range(0, a.fixed, 1000):
            ids = range(lo, min(a.fixed, lo + 1000))
            got = conn.call("MGET", *["soak:fixed:%d" % i for i in ids])
            for i, v in zip(ids, got):
                stats["fixed_checked"] += 1
                if v != fixed_value(i):
                    stats["fixed_bad"] += 1
        stats["final_value"] = int(conn.call("GET", a.key) or 0)
    except Exception as e:
        error("final check: %s: %s" % (type(e).__name__, e))
    if conn is not None:
        conn.close()
    with open(a.out, "w") as f:
        json.dump(stats, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
