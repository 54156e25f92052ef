"""Bench 3: `memoria up` to all-ready vs starting the same `vllm serve` commands by hand, one after another.

usage: python bench/up_time.py [ROUNDS]     (the tiny profile: four real vLLM CPU workers; ~3 min a round)
By hand = what a shell script does: each worker's command exactly as `memoria plan --json` gives it, started
and polled on /health until it answers 200, then the next. memoria's time also includes the LiteLLM proxy
being ready, and its own planning and checks; both arms are interleaved, rounds alternate who goes first.
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
from common import interleave, median, memoria

from memoria_cli.core.home import Home
from tests.helpers import build_tiny_models, free_ports, tiny_models_profile

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
work = Path(tempfile.mkdtemp(prefix="memoria-bench-"))
models = build_tiny_models()
profile = tiny_models_profile(work / "bench.yaml", models, free_ports(5))
env = {"MEMORIA_HOME": str(work / "home"), "MEMORIA_RUNTIMES": str(Home.from_env().runtimes)}
planned = json.loads(memoria("plan", "-p", str(profile), "--json", env=env).stdout)
commands = planned["commands"]
ports = {w["name"]: w["port"] for w in planned["workers"]}


def with_memoria() -> float:
    t = time.perf_counter()
    r = memoria("up", "-d", "-p", str(profile), env=env)
    took = time.perf_counter() - t
    memoria("down", env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return took


def by_hand() -> float:
    procs = []
    t = time.perf_counter()
    try:
        for name, c in commands.items():
            log = open(work / f"{name}.hand.log", "w")
            procs.append(
                subprocess.Popen(
                    c["argv"],
                    env={**os.environ, **c["env"]},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            url = f"http://127.0.0.1:{ports[name]}/health"
            while True:
                if procs[-1].poll() is not None:
                    raise SystemExit(f"{name} exited; see {log.name}")
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        return time.perf_counter() - t
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


m, h = interleave(ROUNDS, with_memoria, by_hand)
print(f"{'way':44} {'median s':>9} {'runs':>20}")
print(f"{'memoria up -d (4 workers + proxy, all ready)':44} {median(m):9.1f} {' '.join(f'{x:.1f}' for x in m):>20}")
print(f"{'vllm serve x4 by hand, one after another':44} {median(h):9.1f} {' '.join(f'{x:.1f}' for x in h):>20}")
print(f"headline: memoria up {median(m):.0f} s vs by hand {median(h):.0f} s ({median(m) / median(h):.2f}x the time)")
