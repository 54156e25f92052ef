"""Bench 2: `memoria embed -i FILE` (10,000 lines) vs a naive one-request-per-line loop through :8200, and vs a
hand-batched OpenAI SDK call straight to the worker.

usage: python bench/embed_file.py [LINES]      (starts its own tiny stack under /tmp/memoria-bench)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import memoria, tiny_stack

LINES = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
home = Path(tempfile.mkdtemp(prefix="memoria-bench-"))
proxy, direct, env = tiny_stack(home / "home")
try:
    texts = [f"sentence number {i} about solar panels and wind" for i in range(LINES)]
    f = home / "in.txt"
    f.write_text("\n".join(texts) + "\n")
    t = time.perf_counter()
    r = memoria("embed", "-i", str(f), "-o", str(home / "out.jsonl"), env=env)
    assert r.returncode == 0, r.stderr
    t_memoria = time.perf_counter() - t

    sample = texts[: max(50, LINES // 50)]  # the naive loop is slow: time a sample, scale to all lines
    with httpx.Client(timeout=60) as c:
        t = time.perf_counter()
        for s in sample:
            c.post(proxy + "/embeddings", json={"model": "tiny-embed", "input": s}).raise_for_status()
        t_naive = (time.perf_counter() - t) * LINES / len(sample)

    import openai

    client = openai.OpenAI(base_url=direct["tiny-embed"], api_key="x")
    t = time.perf_counter()
    for i in range(0, LINES, 64):
        client.embeddings.create(model="tiny-embed", input=texts[i:i + 64])
    t_batched = time.perf_counter() - t
finally:
    memoria("down", env=env)

print(f"{'way':40} {'seconds':>9} {'lines/s':>9}")
for name, s in (("memoria embed -i (through :8200)", t_memoria), ("naive loop, 1 line/request (scaled)", t_naive),
                ("hand-batched SDK, direct to worker", t_batched)):
    print(f"{name:40} {s:9.1f} {LINES / s:9.0f}")
print(f"headline: memoria embed {t_naive / t_memoria:.1f}x the naive loop (target >= 20x), "
      f"{t_batched / t_memoria:.2f}x the hand-batched direct call (target >= 0.9x)")
