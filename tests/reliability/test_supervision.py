"""The supervisor's restart policy, timed on real processes (stand-in workers: only memoria is under test)."""

from __future__ import annotations

import itertools
import json
import re
import time

import pytest

from tests.helpers import run_memoria


def starts(log: str, name: str) -> list[float]:
    return [float(t) for t in re.findall(rf"standin {name} starting on \d+ pid \d+ at ([\d.]+)", log)]


def test_crash_loop_backoff_fatal_quiet_then_restart_recovers(home, standin_profile, tmp_path):
    flag = tmp_path / "broken"
    flag.write_text("the worker fails at start while this file exists")
    prof = standin_profile(env_a={"STANDIN_FAIL_WHILE_FILE": str(flag)})
    r = run_memoria("up", "-d", "-p", str(prof))
    assert r.returncode == 7 and "3 failed starts in a row" in r.stderr
    t = starts((home / "logs" / "alpha.log").read_text(), "alpha")
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(t)]
    print(f"FIGURE crash_loop.start_gaps_s: {gaps} (backoff 2 s then 4 s, +-20 % jitter, + start-up)")
    assert len(t) == 3
    assert 1.6 <= gaps[0] <= 3.5 and 3.2 <= gaps[1] <= 6.0, gaps


def test_fatal_after_ready_stays_down_until_restart(home, standin_profile, tmp_path):
    """A worker that crashes again and again after being ready: FATAL past the limit, then no restart for 30 s
    (systemd's "no more than N" rule), and `memoria restart` brings it back once the fault is gone."""
    flag = tmp_path / "broken"
    prof = standin_profile(
        env_a={"STANDIN_CRASH_AFTER": "0.5", "STANDIN_FAIL_WHILE_FILE": str(flag)},
        supervision={"max_crashes": 2, "backoff_base": 0.5, "reset_after": 600},
    )
    assert run_memoria("up", "-d", "-p", str(prof)).returncode == 0

    def alpha() -> dict:
        return json.loads(run_memoria("status", "--json").stdout)["processes"]["alpha"]

    deadline = time.monotonic() + 60
    while alpha()["state"] != "fatal":
        assert time.monotonic() < deadline, alpha()
        time.sleep(0.3)
    assert "crashes in 30 min" in alpha()["reason"]
    log = home / "logs" / "alpha.log"
    n = len(starts(log.read_text(), "alpha"))
    time.sleep(30)
    assert len(starts(log.read_text(), "alpha")) == n and alpha()["state"] == "fatal"
    assert json.loads(run_memoria("status", "--json").stdout)["processes"]["beta"]["state"] == "ready"
    flag.write_text("x")  # still broken: restart is tried, and fails at start
    assert run_memoria("restart", "alpha").returncode == 0
    flag.unlink()
    deadline = time.monotonic() + 60
    while alpha()["state"] not in ("ready", "fatal"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    print(f"FIGURE fatal.quiet_s: 30, starts before FATAL: {n}")
    assert len(starts(log.read_text(), "alpha")) > n


@pytest.mark.parametrize("which", ["worker", "proxy"])
def test_port_taken_by_a_foreign_process_is_refused(home, standin_profile, which):
    import socket
    import subprocess
    import sys

    import yaml

    prof = standin_profile()
    data = yaml.safe_load(prof.read_text())
    port = data["worker_port_base"] + 1 if which == "worker" else data["proxy"]["port"]
    foreign = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        r = run_memoria("up", "-d", "-p", str(prof))
        assert r.returncode == 6 and f"port {port}" in r.stderr and f"pid {foreign.pid}" in r.stderr
        assert foreign.poll() is None
    finally:
        foreign.kill()
