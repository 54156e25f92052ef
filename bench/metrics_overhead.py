"""Bench: what a Prometheus scrape every second costs the request path.

usage: python bench/metrics_overhead.py [ROUNDS=6] [demo|tiny]
The same requests through :8200 (embeddings of one text and 16-token chats, concurrency 16), in two arms
interleaved round by round: with nobody scraping, and with a scraper GETting /metrics once a second (which
fetches every worker's own /metrics and adds memoria's gauges) for the whole measurement. Printed: the
throughput ratio scraped / unscraped and the p50 each arm saw. Target: no measurable cost (>= 0.97x).
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


home = Path(tempfile.mkdtemp(prefix="memoria-bench-"))
proxy, _direct, env = (demo_stack if STACK == "demo" else tiny_stack)(home / "home")
rows, sizes = [], []
try:
    for name, (path, body, n) in ROWS.items():
        run = partial(measure, proxy, path, body, 16, n)
        quiet, busy = interleave(ROUNDS, run, partial(scraped, run, proxy, sizes))
        q, b = median([x[0] for x in quiet]), median([x[0] for x in busy])
        lat_q = sorted(x for r in quiet for x in r[1])
        lat_b = sorted(x for r in busy for x in r[1])
        rows.append((name, q, b, b / q, pct(lat_q, 0.5) * 1000, pct(lat_b, 0.5) * 1000))
        print(name, f"{b / q:.3f}", flush=True, file=sys.stderr)
finally:
    memoria("down", env=env)
print(f"{'workload (conc 16)':20} {'req/s':>8} {'scraped':>8} {'ratio':>6} {'p50 ms':>7} {'scraped':>8}")
for name, q, b, r, p1, p2 in rows:
    print(f"{name:20} {q:8.1f} {b:8.1f} {r:6.3f} {p1:7.1f} {p2:8.1f}")
print(f"scrapes: {len(sizes)}, {median(sizes) / 1024:.0f} KiB each")
worst = min(rows, key=lambda r: r[3])
print(f"headline: with a /metrics scrape every second, worst {worst[3]:.3f}x ({worst[0]}); target >= 0.97x")
