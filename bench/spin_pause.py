"""Bench 5: CPU workers with memoria's pause (vllm_hooks.py) vs vLLM's own spin-wait between engine steps.

usage: python bench/spin_pause.py [ROUNDS=4] [CYCLES=2]
The demo's embedding and chat models (all-MiniLM-L6-v2, SmolLM2-135M). The pause is fixed when a worker starts,
so the two configurations cannot be interleaved request by request: the stack is started CYCLES times in each,
alternating (pause, spin, pause, spin, ...), and every start measures ROUNDS interleaved rounds of one-text
embeddings at concurrency 1 and 16 and 16-token chats at concurrency 16, direct to the worker and through :8200.
Printed: median throughput and p50 latency per configuration and arm, and the proxied/direct throughput ratio.
"""

from __future__ import annotations

import sys
import tempfile
from functools import partial
from pathlib import Path

from common import demo_profile, interleave, measure, median, memoria, stack_urls

from memoria_cli.plugins.vllm_hooks import PAUSE_ENV

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 4
CYCLES = int(sys.argv[2]) if len(sys.argv) > 2 else 2
EMBED = ("demo-embed", "/embeddings", {"model": "demo-embed", "input": "one sentence about the sun"})
CHAT = (
    "demo-chat",
    "/chat/completions",
    {"model": "demo-chat", "max_tokens": 16, "ignore_eos": True, "messages": [{"role": "user", "content": "hi"}]},
)
ROWS = {("embed 1 text", 1): (*EMBED, 100), ("embed 1 text", 16): (*EMBED, 160), ("chat 16 tokens", 16): (*CHAT, 48)}
home = Path(tempfile.mkdtemp(prefix="memoria-bench-")) / "home"
pause_profile, env = demo_profile(home, name="pause.yaml")
configs = {
    "pause (memoria)": pause_profile,
    "spin (vLLM as is)": demo_profile(home, {PAUSE_ENV: "0"}, name="spin.yaml")[0],
}
r = memoria("pull", "-p", str(pause_profile), env=env)
if r.returncode != 0:
    raise SystemExit(r.stderr)
got: dict[tuple, list[float]] = {}
for _cycle in range(CYCLES):
    for config, profile in configs.items():
        r = memoria("up", "-d", "-p", str(profile), env=env)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        try:
            proxy, direct, _ = stack_urls(env)
            for row, (worker, path, body, n) in ROWS.items():
                d, f = interleave(
                    ROUNDS,
                    partial(measure, direct[worker], path, body, row[1], n),
                    partial(measure, proxy, path, body, row[1], n),
                )
                for arm, runs in (("direct", d), ("proxy", f)):
                    got.setdefault((config, row, arm), []).extend(x[0] for x in runs)
                    got.setdefault((config, row, arm, "lat"), []).extend(y for x in runs for y in x[1])
                print(config, row, [round(x[0]) for x in d], [round(x[0]) for x in f], file=sys.stderr, flush=True)
        finally:
            memoria("down", env=env)

print(
    f"{'workload':18} {'conc':>4} {'configuration':18} {'direct/s':>9} {'proxy/s':>9} {'ratio':>6} "
    f"{'direct p50 ms':>14} {'proxy p50 ms':>13}"
)
for row in ROWS:
    for config in configs:
        d, f = median(got[config, row, "direct"]), median(got[config, row, "proxy"])
        ld, lf = (median(got[config, row, arm, "lat"]) * 1000 for arm in ("direct", "proxy"))
        print(f"{row[0]:18} {row[1]:4d} {config:18} {d:9.0f} {f:9.0f} {f / d:6.2f} {ld:14.1f} {lf:13.1f}")
pause, spin = configs
e = {
    c: (median(got[c, ("embed 1 text", 16), "direct"]), median(got[c, ("embed 1 text", 16), "proxy"])) for c in configs
}
one = {c: median(got[c, ("embed 1 text", 1), "proxy", "lat"]) for c in configs}
print(
    f"headline: one-text embeddings at concurrency 16 through :8200, pause vs vLLM's spin: "
    f"{e[pause][1] / e[spin][1]:.2f}x (direct {e[pause][0] / e[spin][0]:.2f}x); proxied/direct "
    f"{e[pause][1] / e[pause][0]:.2f} (pause) vs {e[spin][1] / e[spin][0]:.2f} (spin); one at a time, p50 "
    f"{one[pause] * 1000:.1f} ms (pause) vs {one[spin] * 1000:.1f} ms (spin)"
)
