"""Shared by the bench scripts: a running stack to measure against, and A/B interleaving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def memoria(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "memoria_cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def tiny_stack(home: Path, port_base: int = 23301):
    """Start the tiny profile (all four kinds) in `home`; returns (proxy URL, {worker: direct URL}, env)."""
    from tests.helpers import build_tiny_models, tiny_models_profile

    models = build_tiny_models()
    home.mkdir(parents=True, exist_ok=True)
    profile = tiny_models_profile(home / "bench.yaml", models, port_base)
    from memoria_cli.core.home import Home

    env = {"MEMORIA_HOME": str(home), "MEMORIA_RUNTIMES": str(Home.from_env().runtimes)}  # the set-up runtimes
    r = memoria("up", "-d", "-p", str(profile), env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return stack_urls(env)


def demo_stack(home: Path):
    """The demo profile's embedding and chat models (real weights from the package index, `memoria pull`),
    on free ports in `home`; returns (proxy URL, {worker: direct URL}, env)."""
    profile, env = demo_profile(home)
    for step in (("pull", "-p", str(profile)), ("up", "-d", "-p", str(profile))):
        r = memoria(*step, env=env)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
    return stack_urls(env)


def demo_profile(
    home: Path, model_env: dict[str, str] | None = None, name: str = "bench-demo.yaml"
) -> tuple[Path, dict]:
    """The demo's embedding and chat models on free ports, as a profile in `home` (each model's environment
    extended by `model_env`); returns (profile, env for `memoria`)."""
    import yaml

    from memoria_cli.core.home import Home
    from tests.helpers import free_ports

    home.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((ROOT / "profiles" / "demo.yaml").read_text())
    data["models"] = [m for m in data["models"] if m["kind"] in ("embedding", "chat")]
    for m in data["models"]:
        m["env"] = {**m.get("env", {}), **(model_env or {})}
    base = free_ports(len(data["models"]))
    data["proxy"], data["worker_port_base"] = {"host": "127.0.0.1", "port": base - 1}, base
    profile = home / name
    profile.write_text(yaml.safe_dump(data, sort_keys=False))
    return profile, {"MEMORIA_HOME": str(home), "MEMORIA_RUNTIMES": str(Home.from_env().runtimes)}


def stack_urls(env: dict) -> tuple[str, dict[str, str], dict]:
    state = json.loads(memoria("status", "--json", env=env).stdout)
    direct = {n: f"http://127.0.0.1:{p['port']}/v1" for n, p in state["processes"].items() if n != "proxy"}
    return state["url"], direct, env


def interleave(rounds: int, *arms):
    """Run each arm once per round, the order rotated every round (noise hits all alike); their results, one
    list per arm."""
    results: list[list] = [[] for _ in arms]
    for i in range(rounds):
        for k in range(len(arms)):
            j = (i + k) % len(arms)
            results[j].append(arms[j]())
    return results


def median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs)


def measure(
    base: str, path: str, body: dict, conc: int, n: int, headers: dict | None = None
) -> tuple[float, list[float]]:
    """n requests from `conc` threads over one pooled keep-alive client (as an SDK would)."""
    lat: list[float] = []
    client = httpx.Client(
        timeout=120, headers=headers, limits=httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    )

    def one(_: int, body: dict = body) -> None:
        t = time.perf_counter()
        if body.get("stream"):
            with client.stream("POST", base + path, json=body) as r:
                r.raise_for_status()
                for _chunk in r.iter_bytes():
                    pass
        else:
            client.post(base + path, json=body).raise_for_status()
        lat.append(time.perf_counter() - t)

    warm = {**body, "max_tokens": 1} if "max_tokens" in body else body  # same route, one token: cheap
    with client:
        with ThreadPoolExecutor(conc) as pool:  # open `conc` connections, as the measured run will use
            list(pool.map(partial(one, body=warm), range(conc)))
        lat.clear()
        t = time.perf_counter()
        with ThreadPoolExecutor(conc) as pool:
            list(pool.map(one, range(n)))
        return n / (time.perf_counter() - t), sorted(lat)


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
