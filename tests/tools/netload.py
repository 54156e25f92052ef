"""Requests made from inside a test namespace (tests/tools/netns.py runs this with `ip netns exec`).

netload.py one                   stdin: [method, url, httpx kwargs]; prints {"status", "body"} or {"error"}.
                                 Method CONNECT with url "address:port": a bare TCP connect (status 0 if
                                 accepted).
netload.py load URLS KEY THREADS COUNT
                                 stdin: one line, the JSON body to POST; POSTs it from THREADS threads (thread
                                 i to the i-th of the comma-separated URLS, round robin), COUNT requests in
                                 all, or with COUNT 0 until stdin closes; prints {"seen": {status or error:
                                 n}, "latencies": [s of each 200], "seconds": wall time of the whole load}.
netload.py pairs URLS KEY COUNT  stdin: the JSON body; one request at a time, to each of URLS in turn, COUNT
                                 rounds (one client per URL, kept alive); prints {"latencies": [[s per URL]
                                 per round]}: side by side, so slow drifts of the machine hit all alike.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import Counter

import httpx


def one() -> None:
    method, url, kw = json.loads(sys.stdin.read())
    if method == "CONNECT":
        address, port = url.rsplit(":", 1)
        try:
            socket.create_connection((address, int(port)), timeout=2).close()
            print(json.dumps({"status": 0}))
        except OSError as exc:
            print(json.dumps({"status": -1, "error": type(exc).__name__}))
        return
    try:
        r = httpx.request(method, url, timeout=kw.pop("timeout", 30), **kw)
        print(json.dumps({"status": r.status_code, "body": r.text}))
    except httpx.HTTPError as exc:
        print(json.dumps({"status": -1, "error": type(exc).__name__}))


def load(urls: list[str], key: str, threads: int, count: int) -> None:
    body = json.loads(sys.stdin.readline())
    stop, seen, latencies, lock = threading.Event(), Counter[str](), [], threading.Lock()
    left = [count]

    def run(url: str) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            while not stop.is_set():
                if count:
                    with lock:
                        if left[0] == 0:
                            return
                        left[0] -= 1
                t = time.perf_counter()
                try:
                    r = http.post(url, json=body)
                    what = str(r.status_code)
                except httpx.HTTPError as exc:
                    what = type(exc).__name__
                with lock:
                    seen[what] += 1
                    if what == "200":
                        latencies.append(time.perf_counter() - t)

    pool = [threading.Thread(target=run, args=(urls[i % len(urls)],), daemon=True) for i in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    if not count:
        sys.stdin.read()  # until the caller closes it
        stop.set()
    for t in pool:
        t.join(600)
    print(json.dumps({"seen": dict(seen), "latencies": latencies, "seconds": time.perf_counter() - t0}))


def pairs(urls: list[str], key: str, count: int) -> None:
    body = json.loads(sys.stdin.readline())
    headers = {"Authorization": f"Bearer {key}"}
    clients = [httpx.Client(headers=headers, timeout=60) for _ in urls]
    rounds = []
    for i in range(count + 2):
        row = []
        for url, http in zip(urls, clients, strict=True):
            t = time.perf_counter()
            http.post(url, json=body).raise_for_status()
            row.append(time.perf_counter() - t)
        if i >= 2:  # the first two rounds open the connections
            rounds.append(row)
    print(json.dumps({"latencies": rounds}))


if __name__ == "__main__":
    if sys.argv[1] == "one":
        one()
    elif sys.argv[1] == "pairs":
        pairs(sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]))
    else:
        load(sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
