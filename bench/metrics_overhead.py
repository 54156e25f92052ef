"""Bench: what a Prometheus scrape every second costs the request path.

usage: python bench/metrics_overhead.py [ROUNDS=6] [demo|tiny]
The same requests through :8200 (embeddings of one text and 16-token chats, concurrency 16), in two arms
interleaved round by round: with nobody scraping, and with a scraper GETting /metrics once a second (which
fetches every worker's own /metrics and adds memoria's gauges) for the whole measurement. Printed: the
throughput ratio scraped / unscraped, the p50 each arm saw, and the CPU time one scrape costs the stack (the
kernel's accounting, which the machine's noise does not move). Target: no measurable cost (>= 0.97x).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import httpx
from common import demo_stack, interleave, measure, median, memoria, pct, tiny_stack

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 6
STACK = sys.argv[2] if len(sys.argv) > 2 else "demo"
EMBED, CHAT = ("demo-embed", "demo-chat") if STACK == "demo" else ("tiny-embed", "tiny-chat")
ROWS = {
    "embed 1 text": ("/embeddings", {"model": EMBED, "input": "one sentence about the sun"}, 160),
    "chat 16 tokens": (
        "/chat/completions",
        {"model": CHAT, "max_tokens": 16, "ignore_eos": True, "messages": [{"role": "user", "content": "hi"}]},
        48,
    ),
}


def scraped(fn, base: str, sizes: list[int]):
    """`fn()` while a scraper reads /metrics every second, as Prometheus would."""
    stop = threading.Event()

    def scrape() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                t = time.monotonic()
                sizes.append(len(c.get(base.removesuffix("/v1") + "/metrics").content))
                stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))

    th = threading.Thread(target=scrape, daemon=True)
    th.start()
    try:
        return fn()
    finally:
        stop.set()
        th.join()


def scrape_cpu(urls: list[str], env: dict, n: int) -> float:
    """CPU milliseconds one scrape (a GET of each of `urls`) costs the stack (the proxy and every worker's
    processes), from the kernel's own accounting: a figure the machine's noise does not move."""
    import json

    import psutil

    state = json.loads(memoria("status", "--json", env=env).stdout)
    procs = []
    for p in state["processes"].values():
        root = psutil.Process(p["pid"])
        procs += [root, *root.children(recursive=True)]

    def total() -> float:
        return sum(sum(x.cpu_times()[:2]) for x in procs)

    time.sleep(2)
    idle0 = total()
    time.sleep(n * 0.2)  # the same stack doing nothing for as long: its idle cost is taken off
    idle = total() - idle0
    t0 = total()
    with httpx.Client(timeout=10) as c:
        start = time.monotonic()
        for _ in range(n):
            for url in urls:
                c.get(url).raise_for_status()
        took = time.monotonic() - start
    used = total() - t0 - idle * took / (n * 0.2)
    return used / n * 1000


home = Path(tempfile.mkdtemp(prefix="memoria-bench-"))
proxy, _direct, env = (demo_stack if STACK == "demo" else tiny_stack)(home / "home")
rows, sizes = [], []
cpu_ms = direct_ms = 0.0
try:
    for name, (path, body, n) in ROWS.items():
        run = partial(measure, proxy, path, body, 16, n)
        quiet, busy = interleave(ROUNDS, run, partial(scraped, run, proxy, sizes))
        q, b = median([x[0] for x in quiet]), median([x[0] for x in busy])
        lat_q = sorted(x for r in quiet for x in r[1])
        lat_b = sorted(x for r in busy for x in r[1])
        rows.append((name, q, b, b / q, pct(lat_q, 0.5) * 1000, pct(lat_b, 0.5) * 1000))
        print(name, f"{b / q:.3f}", flush=True, file=sys.stderr)
    cpu_ms = scrape_cpu([proxy.removesuffix("/v1") + "/metrics"], env, 30)
    direct_ms = scrape_cpu([u.removesuffix("/v1") + "/metrics" for u in _direct.values()], env, 30)
finally:
    memoria("down", env=env)
print(f"{'workload (conc 16)':20} {'req/s':>8} {'scraped':>8} {'ratio':>6} {'p50 ms':>7} {'scraped':>8}")
for name, q, b, r, p1, p2 in rows:
    print(f"{name:20} {q:8.1f} {b:8.1f} {r:6.3f} {p1:7.1f} {p2:8.1f}")
print(f"scrapes: {len(sizes)}, {median(sizes) / 1024:.0f} KiB each")
print(
    f"CPU per scrape (proxy + workers): {cpu_ms:.1f} ms through /metrics; {direct_ms:.1f} ms scraping every worker "
    f"directly (vLLM's own rendering); memoria's share {cpu_ms - direct_ms:.1f} ms"
)
worst = min(rows, key=lambda r: r[3])
print(f"headline: with a /metrics scrape every second, worst {worst[3]:.3f}x ({worst[0]}); target >= 0.97x")
