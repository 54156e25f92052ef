"""Bench 1: the same requests straight to a worker vs through the proxy, A/B interleaved in one run.

usage: python bench/proxy_overhead.py [ROUNDS]  (starts its own tiny stack)
Rows: embeddings 1 and 32 texts/request, chat 16 tokens, chat streamed 128 tokens (ignore_eos), at
concurrency 1 and 16: throughput ratio (through / direct) and added p50/p99 latency.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import interleave, median, memoria, tiny_stack

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
N = 96  # requests per measurement

WORKLOADS = {
    "embed 1 text": ("tiny-embed", "/embeddings", {"model": "tiny-embed", "input": "one sentence about the sun"}),
    "embed 32 texts": ("tiny-embed", "/embeddings", {"model": "tiny-embed", "input": ["a sentence"] * 32}),
    "chat 16 tokens": ("tiny-chat", "/chat/completions", {
        "model": "tiny-chat", "max_tokens": 16, "ignore_eos": True, "messages": [{"role": "user", "content": "hi"}]}),
    "chat stream 128": ("tiny-chat", "/chat/completions", {
        "model": "tiny-chat", "max_tokens": 128, "ignore_eos": True, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}),
}


def measure(base: str, path: str, body: dict, conc: int) -> tuple[float, list[float]]:
    lat: list[float] = []

    def one(_: int) -> None:
        t = time.perf_counter()
        with httpx.Client(timeout=120) as c:
            if body.get("stream"):
                with c.stream("POST", base + path, json=body) as r:
                    for _chunk in r.iter_bytes():
                        pass
            else:
                c.post(base + path, json=body).raise_for_status()
        lat.append(time.perf_counter() - t)

    t = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, range(N)))
    return N / (time.perf_counter() - t), sorted(lat)


home = Path(tempfile.mkdtemp(prefix="memoria-bench-"))
proxy, direct, env = tiny_stack(home / "home")
rows = []
try:
    for name, (worker, path, body) in WORKLOADS.items():
        for conc in (1, 16):
            a, b = interleave(ROUNDS, lambda p=path, b=body, c=conc: measure(proxy, p, b, c),
                              lambda w=worker, p=path, b=body, c=conc: measure(direct[w], p, b, c))
            ratio = median([x[0] for x in a]) / median([x[0] for x in b])
            la, lb = a[-1][1], b[-1][1]
            rows.append((name, conc, ratio, (median(la) - median(lb)) * 1000,
                         (la[int(len(la) * .99)] - lb[int(len(lb) * .99)]) * 1000))
finally:
    memoria("down", env=env)
print(f"{'workload':18} {'conc':>4} {'ratio':>6} {'+p50 ms':>8} {'+p99 ms':>8}")
for name, conc, ratio, p50, p99 in rows:
    print(f"{name:18} {conc:4d} {ratio:6.2f} {p50:8.1f} {p99:8.1f}")
worst = min(rows, key=lambda r: r[2])
print(f"headline: through :8200 vs direct, worst {worst[2]:.2f}x ({worst[0]}, concurrency {worst[1]}); target >= 0.9x")
