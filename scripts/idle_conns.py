#!/usr/bin/env python3
"""Memory per idle keep-alive connection of one server process.

Opens N connections to HOST:PORT, sends one `GET PATH` on each (keep-alive)
and reads the answer, holds them idle, then closes them. Prints one JSON
line: the server's VmRSS before, with the connections held, right after
closing, and when it came back within 20% of before (or 60 s passed).

    idle_conns.py --port 8181 --pid 1234 -n 10000 [--path /v1/config] [--tls]

With several --pid, their RSS is summed (nginx: master and worker).
"""
import argparse
import json
import resource
import selectors
import socket
import ssl
import time


def rss(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return total


def heap_counters(url):
    """(allocations, bytes allocated) by the shards so far, from /metrics."""
    if not url:
        return None
    import urllib.request
    totals = {"bingsan_allocs_total": 0, "bingsan_alloc_bytes_total": 0}
    for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["bingsan_allocs_total"], totals["bingsan_alloc_bytes_total"]


def settle(pid, seconds=1.0):
    time.sleep(seconds)
    return rss(pid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, action="append", required=True)
    ap.add_argument("--tls", action="store_true", help="TLS (certificate not verified)")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--path", default="/v1/config")
    ap.add_argument("--metrics", help="bingsan /metrics URL: allocations per connection too")
    ap.add_argument("--give-back-within", type=float, default=60.0)
    a = ap.parse_args()
    want = a.n + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))

    before = settle(a.pid)
    heap_before = heap_counters(a.metrics)
    req = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}\r\n\r\n".encode()
    socks = []
    ctx = None
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for _ in range(a.n):
        s = socket.create_connection((a.host, a.port), timeout=10)
        if ctx:
            s = ctx.wrap_socket(s)
        s.sendall(req)
        socks.append(s)
    # Read every answer (a status line and a complete head is enough).
    sel = selectors.DefaultSelector()
    pending = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        pending[s] = b""
    deadline = time.time() + 60
    answered = 0
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except ssl.SSLWantReadError:
                continue
            pending[s] += data
            if b"\r\n\r\n" in pending[s] or not data:
                ok = pending.pop(s).startswith(b"HTTP/1.1 200")
                answered += ok
                sel.unregister(s)
    held = settle(a.pid, 2.0)
    heap_held = heap_counters(a.metrics)
    # Still open on the server side: nothing readable (no FIN) on our end.
    open_now = sum(1 for s in socks if not _peer_closed(s))
    for s in socks:
        s.close()
    closed_at = time.time()
    after_close = settle(a.pid)
    back_s = None
    last = after_close
    while time.time() - closed_at < a.give_back_within:
        last = rss(a.pid)
        if last <= before * 1.2:
            back_s = round(time.time() - closed_at, 1)
            break
        time.sleep(1)
    print(json.dumps({
        "connections": a.n,
        "tls": a.tls,
        "answered": answered,
        "open_when_measured": open_now,
        "rss_before": before,
        "rss_held": held,
        "per_connection_bytes": round((held - before) / a.n),
        "rss_1s_after_close": after_close,
        **({
            "allocs_per_connection": round((heap_held[0] - heap_before[0]) / a.n, 1),
            "bytes_allocated_per_connection": round((heap_held[1] - heap_before[1]) / a.n),
        } if heap_before else {}),
        "rss_last": last,
        "back_within_20pct_after_s": back_s,
    }))


def _peer_closed(s):
    raw = socket.socket(fileno=s.fileno())
    try:
        return raw.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        raw.detach()


if __name__ == "__main__":
    main()
