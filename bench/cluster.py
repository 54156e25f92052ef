"""Bench: two replicas of a chat model on two hosts, through a third host's entry vs driven directly, in one
run (issue 15).

usage: python bench/cluster.py [ROUNDS=5] [REQUESTS=160]   (root: it makes network namespaces)

Three hosts in network namespaces (tests/tools/netns.py): `b` and `c` each run the tiny chat model on real
`vllm serve` (CPU build) behind their own memoria proxy; `entry` runs no model, only the proxy clients use.
The load is made on the entry host for both arms, so the client is in the same place:
  throughput: REQUESTS 8-token chats on 8 threads through the entry (which spreads them over b and c) vs the
              same on 8 threads straight to b's and c's proxies, 4 each, at the same time;
  hop:        one chat at a time (max_tokens 1), through the entry and straight to a member in turn; the
              median of the paired differences is what the cross-host hop adds.
Arms are interleaved, their order rotated every round. All three hosts share this machine's 2 cores, so
the entry's proxy takes CPU from the two vLLM engines it feeds: on real hosts the entry has its own.
Targets (the issue): throughput >= 0.9x, +p50 <= 2 ms.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import interleave, median, pct

from tests.helpers import DEFAULT_RUNTIMES, build_tiny_models, tiny_models_profile
from tests.tools import netns

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
REQUESTS = int(sys.argv[2]) if len(sys.argv) > 2 else 160
KEY = "bench-cluster"
CHAT = {"model": "tiny-chat", "max_tokens": 8, "ignore_eos": True, "messages": [{"role": "user", "content": "hi"}]}
ONE = {**CHAT, "max_tokens": 1}


def main() -> None:
    if why := netns.available():
        raise SystemExit(f"bench/cluster.py: {why}")
    root = Path(tempfile.mkdtemp(prefix="memoria-bench-cluster-"))
    data = yaml.safe_load(tiny_models_profile(root / "tiny.yaml", build_tiny_models(), 8300).read_text())
    data["models"] = [{**m, "hosts": ["b", "c"]} for m in data["models"] if m["name"] == "tiny-chat"]
    hosts = ["entry", "b", "c"]
    with netns.Lab(hosts) as net:
        data["proxy"] = {"port": 8200}
        data["hosts"] = [{"name": h, "address": net.address[h], "entry": h == "entry"} for h in hosts]
        profile = root / "cluster.yaml"
        profile.write_text(yaml.safe_dump(data, sort_keys=False))

        def env(h: str) -> dict[str, str]:
            return {"MEMORIA_HOME": str(root / h), "MEMORIA_RUNTIMES": str(DEFAULT_RUNTIMES), "LITELLM_MASTER_KEY": KEY}

        try:
            t0 = time.monotonic()
            net.up(["b", "c"], profile, env)
            net.up(["entry"], profile, env)
            print(f"cluster up in {time.monotonic() - t0:.0f} s", flush=True)
            run(net)
        finally:
            for h in hosts:
                net.memoria(h, "down", env=env(h), timeout=180)


def run(net: netns.Lab) -> None:
    path = "/v1/chat/completions"
    entry = f"http://{net.address['entry']}:8200{path}"
    direct = [f"http://{net.address[h]}:8200{path}" for h in ("b", "c")]
    _wait_both_in(net)
    net.burst("entry", [entry], CHAT, KEY, count=16, threads=8)  # warm both replicas and every connection

    def throughput(urls: list[str]):
        def arm() -> float:
            got = net.burst("entry", urls, CHAT, KEY, count=REQUESTS, threads=8)
            assert got["seen"] == {"200": REQUESTS}, got["seen"]
            return REQUESTS / got["seconds"]

        return arm

    thr_entry, thr_direct = interleave(ROUNDS, throughput([entry]), throughput(direct))
    ratios = [a / b for a, b in zip(thr_entry, thr_direct, strict=True)]
    # The hop: one request at a time, entry / b / entry / c / ..., so each entry request has a direct one
    # beside it; the entry spreads over b and c, the direct ones alternate between them too.
    rounds = net.pairs("entry", [entry, direct[0], entry, direct[1]], ONE, KEY, count=ROUNDS * 60)
    via = [r for row in rounds for r in (row[0], row[2])]
    straight = [r for row in rounds for r in (row[1], row[3])]
    added = [(e - d) * 1000 for row in rounds for e, d in ((row[0], row[1]), (row[2], row[3]))]
    p50_via, p50_direct = statistics.median(via) * 1000, statistics.median(straight) * 1000
    p99_via, p99_direct = pct(sorted(via), 0.99) * 1000, pct(sorted(straight), 0.99) * 1000
    print(f"\n{ROUNDS} rounds of {REQUESTS} chats of 8 tokens at concurrency 8; {len(via)} one-token chats at 1")
    print("| arm | req/s at conc 8 (median) | p50 ms at conc 1 | p99 ms at conc 1 |")
    print("|---|---|---|---|")
    print(f"| through the entry (spread over b, c) | {median(thr_entry):.1f} | {p50_via:.1f} | {p99_via:.1f} |")
    print(f"| straight to b and c | {median(thr_direct):.1f} | {p50_direct:.1f} | {p99_direct:.1f} |")
    print(f"throughput ratio per round: {' '.join(f'{r:.2f}' for r in ratios)}")
    print(
        f"headline: throughput through the entry {median(ratios):.2f}x direct (target >= 0.9); the hop adds "
        f"{median(added):.1f} ms p50 (paired; target <= 2)"
    )


def _wait_both_in(net: netns.Lab) -> None:
    import json

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = net.http(
            "entry",
            "GET",
            f"http://{net.address['entry']}:8200/ui/api/members",
            headers={"Authorization": f"Bearer {KEY}"},
        )
        if r["status"] == 200 and all(m["in"] for m in json.loads(r["body"])["members"]):
            return
        time.sleep(0.5)
    raise SystemExit("the entry never admitted both members")


if __name__ == "__main__":
    main()
