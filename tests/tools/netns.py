"""Several hosts on one machine, for tests and benches that cross a network (issue 15): one Linux network
namespace per host, each with its own loopback and one veth into a bridge that lives in a namespace of its
own. The addresses (198.18.0.0/24, the range RFC 2544 sets aside for benchmarks) exist only inside these
namespaces: nothing here touches the machine's own interfaces, and every namespace is deleted on close.

Needs root and iproute2's `ip`. A "link cut" sets the host's bridge-side veth down: packets in flight are
dropped and nothing answers, as when a cable is pulled (no RST, no ICMP).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

NET = "198.18.0"
MEMORIA = (sys.executable, "-m", "memoria_cli")
NETLOAD = (sys.executable, str(Path(__file__).resolve().with_name("netload.py")))  # the requests, from inside


def available() -> str | None:
    """Why these labs cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Lab:
    """Hosts `names` on one bridge; host i has address 198.18.0.(i+2). Use as a context manager."""

    def __init__(self, names: list[str]) -> None:
        tag = f"ml{os.getpid() % 100000}"
        self.bridge = f"{tag}-br"
        self.ns = {n: f"{tag}-{n}" for n in names}
        self.address = {n: f"{NET}.{i + 2}" for i, n in enumerate(names)}
        self._port = {n: f"p{i}" for i, n in enumerate(names)}  # the bridge-side end of each host's veth

    def __enter__(self) -> Lab:
        try:
            _ip("netns", "add", self.bridge)
            _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge, "link", "set", "br0", "up")
            for name, ns in self.ns.items():
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
                port = self._port[name]
                _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.bridge)
                _ip("-n", self.bridge, "link", "set", port, "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{self.address[name]}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill whatever still runs in the namespaces, then delete them (their veths go with them)."""
        for ns in [*self.ns.values(), self.bridge]:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def argv(self, host: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[host], *argv]

    def run(
        self, host: str, *argv: str, env: dict[str, str] | None = None, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(host, *argv),
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def memoria(
        self, host: str, *args: str, env: dict[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`memoria ARGS` run on `host` (inside its namespace)."""
        return self.run(host, *MEMORIA, *args, env=env, timeout=timeout)

    def up(self, hosts: list[str], profile: Path, env_of: Callable[[str], dict[str, str]]) -> None:
        """`memoria up -d -p PROFILE --as HOST` on each of `hosts` at once, each with its own environment;
        returns when all are ready, raises with the stderr of any that failed."""
        procs = {
            h: subprocess.Popen(
                self.argv(h, *MEMORIA, "up", "-d", "-p", str(profile), "--as", h),
                env={**os.environ, **env_of(h)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            for h in hosts
        }
        failed = []
        for h, proc in procs.items():
            _, err = proc.communicate(timeout=900)
            if proc.returncode != 0:
                failed.append(f"up --as {h} -> {proc.returncode}: {err[-3000:]}")
        if failed:
            raise AssertionError("\n".join(failed))

    @contextlib.contextmanager
    def cluster(
        self, profile: Path, waves: list[list[str]], env_of: Callable[[str], dict[str, str]]
    ) -> Iterator[float]:
        """`up` of `profile` on each wave of hosts in turn (the hosts of a wave at once); yields the seconds it
        took; then `down` on every host that has a state, whatever happened."""
        t0 = time.monotonic()
        try:
            for wave in waves:
                self.up(wave, profile, env_of)
            yield time.monotonic() - t0
        finally:
            for h in [h for wave in waves for h in wave]:
                if (Path(env_of(h)["MEMORIA_HOME"]) / "state.json").exists():
                    self.memoria(h, "down", env=env_of(h), timeout=180)

    def status(self, host: str, env: dict[str, str]) -> dict[str, Any]:
        """`memoria status --json` on `host`."""
        r = self.memoria(host, "status", "--json", env=env)
        assert r.returncode == 0, r.stderr
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    def http(self, host: str, method: str, url: str, **kw: Any) -> dict[str, Any]:
        """One request made from `host`: {"status": int, "body": str} or {"error": the exception's name}."""
        return self._netload(host, ["one"], json.dumps([method, url, kw]), timeout=120)

    def connects(self, host: str, address: str, port: int) -> bool:
        """Whether a TCP connection from `host` to address:port is accepted within 2 s."""
        return self.http(host, "CONNECT", f"{address}:{port}")["status"] == 0

    def load(self, host: str, urls: list[str], body: dict[str, Any], key: str, threads: int = 3) -> Load:
        """Steady POSTs of `body` from `host` until the Load is stopped (use it as a context manager)."""
        return Load(self.argv(host, *NETLOAD, "load", ",".join(urls), key, str(threads), "0"), body)

    def burst(
        self, host: str, urls: list[str], body: dict[str, Any], key: str, count: int, threads: int
    ) -> dict[str, Any]:
        """`count` POSTs of `body` from `host` on `threads` threads: {"seen", "latencies", "seconds"}."""
        return self._netload(host, ["load", ",".join(urls), key, str(threads), str(count)], json.dumps(body))

    def pairs(self, host: str, urls: list[str], body: dict[str, Any], key: str, count: int) -> list[list[float]]:
        """`count` rounds of one request to each of `urls` in turn, from `host`: the latencies, per round."""
        got = self._netload(host, ["pairs", ",".join(urls), key, str(count)], json.dumps(body))
        rounds: list[list[float]] = got["latencies"]
        return rounds

    def _netload(self, host: str, args: list[str], stdin: str, timeout: float = 900) -> dict[str, Any]:
        """tests/tools/netload.py ARGS run on `host`, `stdin` its input: the JSON it prints."""
        r = self.run(host, *NETLOAD, *args, input=stdin + "\n", timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(r.stderr[-2000:])
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    def cut(self, host: str) -> None:
        _ip("-n", self.bridge, "link", "set", self._port[host], "down")

    def mend(self, host: str) -> None:
        _ip("-n", self.bridge, "link", "set", self._port[host], "up")


class Load:
    """Steady POSTs from one host until stopped (tests/tools/netload.py): what came back, counted by status or
    by error name, and the latencies of the 200s."""

    def __init__(self, argv: list[str], body: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(body) + "\n")
        self.proc.stdin.flush()
        self.seen: dict[str, int] = {}
        self.latencies: list[float] = []

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        out, _ = self.proc.communicate(timeout=120)  # closing stdin tells it to stop
        got = json.loads(out)
        self.seen, self.latencies = got["seen"], got["latencies"]
