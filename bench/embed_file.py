"""Bench 2: `memoria embed -i FILE` (10,000 lines) vs a naive one-request-per-line loop through :8200, and vs a
hand-batched OpenAI SDK call straight to the worker.

usage: python bench/embed_file.py [LINES] [ROUNDS]    (starts its own tiny stack under /tmp/memoria-bench-*)
The ways are interleaved, ROUNDS times each; the output file is checked to hold one vector per line.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import interleave, median, memoria, tiny_stack

LINES = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
home = Path(tempfile.mkdtemp(prefix="memoria-bench-"))
proxy, direct, env = tiny_stack(home / "home")
texts = [f"sentence number {i} about solar panels and wind" for i in range(LINES)]
f = home / "in.txt"
f.write_text("\n".join(texts) + "\n")
sample = texts[: max(50, LINES // 10)]  # the naive loop is slow: time a tenth, scale to all lines


def with_memoria(out: str, *args: str) -> float:
    (home / out).unlink(missing_ok=True)  # memoria never overwrites an output file
    t = time.perf_counter()
    r = memoria("embed", "-i", str(f), "-o", str(home / out), *args, env=env)
    assert r.returncode == 0, r.stderr
    return time.perf_counter() - t


def naive() -> float:
    with httpx.Client(timeout=60) as c:
        t = time.perf_counter()
        for s in sample:
            c.post(proxy + "/embeddings", json={"model": "tiny-embed", "input": s}).raise_for_status()
        return (time.perf_counter() - t) * LINES / len(sample)


def hand_batched() -> float:
    import openai

    client = openai.OpenAI(base_url=direct["tiny-embed"], api_key="x")
    t = time.perf_counter()
    for i in range(0, LINES, 64):
        client.embeddings.create(model="tiny-embed", input=texts[i : i + 64])
    return time.perf_counter() - t


try:
    m, j, n, b = interleave(
        ROUNDS,
        lambda: with_memoria("out.npy", "--format", "npy"),
        lambda: with_memoria("out.jsonl"),
        naive,
        hand_batched,
    )
    rows = (
        ("memoria embed -i, .npy (through :8200)", m),
        ("memoria embed -i, JSONL (through :8200)", j),
        ("naive loop, 1 line/request (scaled)", n),
        ("hand-batched SDK, direct to worker", b),
    )
    assert sum(1 for _ in (home / "out.jsonl").open()) == LINES
    assert (home / "out.npy").stat().st_size == 128 + LINES * 64 * 4
finally:
    memoria("down", env=env)

print(f"{'way':44} {'median s':>9} {'lines/s':>9}")
for name, runs in rows:
    print(f"{name:44} {median(runs):9.1f} {LINES / median(runs):9.0f}")
print(
    f"headline: memoria embed (npy) {median(n) / median(m):.1f}x the naive loop (target >= 20x), "
    f"{median(b) / median(m):.2f}x the hand-batched direct call (target >= 0.9x); JSONL "
    f"{median(n) / median(j):.1f}x and {median(b) / median(j):.2f}x"
)
