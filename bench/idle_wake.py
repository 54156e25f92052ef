"""Bench 6: a request for a stopped model, held at the proxy while it starts, against the same worker's bare
start-up; vLLM's sleep/wake round trip on the CPU build's dev endpoints; the memory given back.

usage: python bench/idle_wake.py [ROUNDS]     (the tiny chat model on the vLLM CPU build; ~1.5 min a round)

- held: tiny-chat runs under memoria with `idle: {after: 3s, action: stop}`. Once it has stopped, one chat
  request goes through the proxy; the figure is the time from sending it to its answer. It includes the
  wake request, the worker's whole cold start, the proxy seeing it ready, and the answer.
- bare: the same worker's own command (as `memoria plan --json` gives it, on a spare port) is started by
  hand and polled on /health every 0.1 s until 200; then the same request goes straight to it. The figure
  is the time from spawn to answer.
The two arms are interleaved, and the order alternates every round. Then, on the bare worker served with
VLLM_SERVER_DEV_MODE=1, ten POST /sleep + POST /wake_up round trips are timed (on the CPU build they pause
and resume the engine; GPU builds also free and refill memory). Last, the resident memory of its processes
before and after sleep, and what the stopped worker gave back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from common import interleave, median, memoria

from memoria_cli.core.home import Home
from tests.helpers import build_tiny_models, free_ports, write_profile

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
work = Path(tempfile.mkdtemp(prefix="memoria-bench-"))
models = build_tiny_models()
base = free_ports(2)
profile = write_profile(
    work / "idle.yaml",
    [
        {
            "name": "tiny-chat",
            "model": str(models / "tiny-chat"),
            "kind": "chat",
            "reasoning_parser": "qwen3",
            "idle": {"after": 3, "action": "stop", "hold": 300},
        }
    ],
    port_base=base,
    startup_timeout=600,
    supervision={"live_interval": 1.0},
)
env = {"MEMORIA_HOME": str(work / "home"), "MEMORIA_RUNTIMES": str(Home.from_env().runtimes)}
planned = json.loads(memoria("plan", "-p", str(profile), "--json", env=env).stdout)
command = planned["commands"]["tiny-chat"]
spare = free_ports(1) + 5
argv = [str(spare) if prev == "--port" else a for prev, a in zip(["", *command["argv"]], command["argv"], strict=False)]
BODY = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
proxy = f"http://127.0.0.1:{base - 1}/v1"
state_file = work / "home" / "state.json"
given_back: list[int] = []


def worker_state() -> dict:
    return json.loads(state_file.read_text())["processes"]["tiny-chat"]


def held() -> float:
    while worker_state()["state"] != "sleeping":  # it parks 3 s after its last request
        time.sleep(0.2)
    t = time.perf_counter()
    r = httpx.post(proxy + "/chat/completions", json=BODY, timeout=600, trust_env=False)
    took = time.perf_counter() - t
    assert r.status_code == 200, r.text
    given_back.append(tree_rss(worker_state()["pid"]))  # what it holds awake, given back when it stops again
    return took


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


round_trips: list[float] = []
rss: dict[str, int] = {}


def bare() -> float:
    log = open(work / "bare.log", "w")
    t = time.perf_counter()
    p = subprocess.Popen(
        argv,
        env={**os.environ, **command["env"], "VLLM_SERVER_DEV_MODE": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{spare}"
    try:
        with httpx.Client(timeout=600, trust_env=False) as c:
            while True:
                if p.poll() is not None:
                    raise SystemExit(f"the bare worker exited; see {log.name}")
                try:
                    if c.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            r = c.post(url + "/v1/chat/completions", json=BODY)
            took = time.perf_counter() - t
            assert r.status_code == 200, r.text
            if not round_trips:  # once: the dev endpoints' round trip, and what sleep frees here
                rss["awake"] = tree_rss(p.pid)
                for _ in range(10):
                    s = time.perf_counter()
                    assert c.post(url + "/sleep?level=1&mode=wait").status_code == 200
                    rss.setdefault("asleep", tree_rss(p.pid))
                    assert c.post(url + "/wake_up").status_code == 200
                    round_trips.append(time.perf_counter() - s)
                assert c.get(url + "/is_sleeping").json() == {"is_sleeping": False}
        return took
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


up = memoria("up", "-d", "-p", str(profile), env=env)
if up.returncode != 0:
    raise SystemExit(up.stderr)
try:
    h, b = interleave(ROUNDS, held, bare)
finally:
    memoria("down", env=env)

MiB = 2**20


def row(way: str, xs: list[float]) -> str:
    return f"{way:58} {median(xs):9.2f} {' '.join(f'{x:.1f}' for x in xs):>16}"


print(f"{'way':58} {'median s':>9} {'runs':>16}")
print(row("held: a request for the stopped worker, through :8200", h))
print(row("bare: the same worker started by hand, then the request", b))
trips = sorted(round_trips)
print(
    f"vLLM /sleep + /wake_up round trip (CPU build, dev endpoints), 10 runs: {median(trips) * 1000:.0f} ms median, ",
    end="",
)
print(f"{trips[-1] * 1000:.0f} ms max")
print(
    f"resident memory of the CPU worker: awake {rss['awake'] / MiB:.0f} MiB, asleep {rss['asleep'] / MiB:.0f} MiB "
    f"(the CPU build frees nothing asleep); stopped, memoria's worker gave back {median(given_back) / MiB:.0f} MiB"
)
added = median(h) - median(b)
print(
    f"headline: the held request adds {added:+.2f} s to the worker's own start-up and first answer ({median(b):.1f} s)"
)
