"""`memoria up -d / status / down / restart` as real processes, with stand-in workers (only supervision under
test here; the real vLLM + LiteLLM stack is in test_e2e_cpu.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import psutil

from memoria_cli.core.home import Home
from memoria_cli.core.worker_spec import MARKER_ENV
from memoria_cli.run.processes import marked
from memoria_cli.run.state import read_state, write_state
from tests.helpers import run_memoria, run_state, wait_for


def roles(marker: str) -> list[str]:
    """What each live process carrying this home's marker is (alpha, proxy, supervisor...)."""
    out = []
    for p in marked(marker):
        try:
            out.append(p.environ()[MARKER_ENV].split("/")[-1])
        except (psutil.Error, KeyError):
            continue
    return out


def status(memoria) -> dict:
    r = memoria("status", "--json")
    return json.loads(r.stdout)


def test_up_status_down_leaves_nothing(home, memoria, standin_profile):
    prof = standin_profile(env_a={"STANDIN_GRANDCHILD": "1", "STANDIN_IGNORE_TERM": "1"})
    r = memoria("up", "-d", "-p", str(prof))
    assert r.returncode == 0, r.stderr
    s = status(memoria)
    assert s["running"] and s["phase"] == "running"
    assert {n: p["state"] for n, p in s["processes"].items()} == {"alpha": "ready", "beta": "ready", "proxy": "ready"}
    marker = Home.from_env().marker
    assert len(marked(marker)) >= 4  # alpha, its grandchild, beta, proxy
    again = memoria("up", "-d", "-p", str(prof))
    assert again.returncode == 6 and "already running" in again.stderr and "Traceback" not in again.stderr
    ports = [p["port"] for p in s["processes"].values()]
    r = memoria("down")
    assert r.returncode == 0, r.stderr
    assert marked(marker) == []  # the SIGTERM-deaf worker and its grandchild were killed with the group
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as every server does
            sock.bind(("127.0.0.1", port))
    assert memoria("status").returncode == 8


def test_ten_ups_at_once_make_one_supervisor(home, memoria, standin_profile):
    prof = standin_profile(env_a={"STANDIN_START_DELAY": "1"})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "memoria_cli", "up", "-d", "-p", str(prof)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    ok = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] == 6]
    assert len(ok) == 1, results
    assert len(refused) == 9 and all("already running" in e for _, e in refused), results
    sups = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "_supervise" in " ".join(p.info["cmdline"] or []) and str(home) in " ".join(p.info["cmdline"] or [])
    ]
    assert len(sups) == 1


def test_crashed_worker_is_restarted(home, memoria, standin_profile):
    prof = standin_profile(env_a={"STANDIN_CRASH_AFTER": "1.5"})
    assert memoria("up", "-d", "-p", str(prof)).returncode == 0
    s = wait_for(lambda: (st := status(memoria))["processes"]["alpha"]["restarts"] >= 1 and st)
    assert s["processes"]["beta"]["restarts"] == 0


def test_non_retryable_start_failure_fails_fast_with_the_log(home, memoria, standin_profile):
    prof = standin_profile(
        env_b={
            "STANDIN_FAIL_AT_START": "1",
            "STANDIN_FAIL_MESSAGE": "OSError: x does not appear to have a file named config.json",
        }
    )
    t0 = time.monotonic()
    r = memoria("up", "-d", "-p", str(prof))
    assert r.returncode == 7, r.stderr
    assert "beta could not start" in r.stderr and "model not found" in r.stderr
    assert "config.json" in r.stderr  # the worker's own last lines are shown
    assert time.monotonic() - t0 < 30 and "Traceback" not in r.stderr
    assert marked(Home.from_env().marker) == []


def test_crash_loop_goes_fatal_after_three_starts(home, memoria, standin_profile):
    prof = standin_profile(env_a={"STANDIN_FAIL_AT_START": "1"})
    r = memoria("up", "-d", "-p", str(prof))
    assert r.returncode == 7 and "3 failed starts in a row" in r.stderr, r.stderr
    log = (home / "logs" / "alpha.log").read_text()
    assert log.count("memoria: starting alpha") == 3


def test_port_taken_is_refused_naming_the_owner(home, memoria, standin_profile):
    prof = standin_profile()
    import yaml

    port = yaml.safe_load(prof.read_text())["proxy"]["port"]
    foreign = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: foreign.poll() is None and _listening(port))
        r = memoria("up", "-d", "-p", str(prof))
        assert r.returncode == 6 and f"port {port}" in r.stderr and f"pid {foreign.pid}" in r.stderr, r.stderr
        assert foreign.poll() is None  # untouched
        assert marked(Home.from_env().marker) == []
    finally:
        foreign.kill()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_corrupt_state_and_foreign_pid_are_not_trusted(home, memoria, standin_profile):
    home.mkdir(parents=True, exist_ok=True)
    (home / "state.json").write_text("{not json")
    r = memoria("status")
    assert r.returncode == 8 and "corrupt" in r.stderr
    assert list(home.glob("state.json.corrupt-*"))
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fake = run_state(
            supervisor=(foreign.pid, 1.0),
            processes={"alpha": {"state": "ready", "pid": foreign.pid, "create_time": 1.0, "port": 1}},
        )
        write_state(home / "state.json", fake)
        assert replace(read_state(home / "state.json")[0], updated_at=0.0) == fake  # well-formed: only its pids wrong
        r = memoria("down")
        assert r.returncode == 0 and "stopped" in r.stderr, r.stderr
        assert foreign.poll() is None  # a pid that is not ours is never signalled
        prof = standin_profile()
        assert memoria("up", "-d", "-p", str(prof)).returncode == 0
    finally:
        foreign.kill()


def test_killed_supervisor_leftovers_are_swept_by_next_up(home, memoria, standin_profile):
    prof = standin_profile()
    assert memoria("up", "-d", "-p", str(prof)).returncode == 0
    s = status(memoria)
    os.kill(s["supervisor"]["pid"], signal.SIGKILL)
    old = {p["pid"] for p in s["processes"].values()}
    time.sleep(0.5)
    r = memoria("status")
    assert r.returncode == 8 and "supervisor is gone" in r.stderr
    r = memoria("up", "-d", "-p", str(prof))
    assert r.returncode == 0, r.stderr
    assert "left by a previous run" in r.stderr
    new = status(memoria)
    assert not old & {p["pid"] for p in new["processes"].values()}
    assert sorted(roles(Home.from_env().marker)) == ["alpha", "beta", "proxy"]  # no duplicates


def test_restart_command(home, memoria, standin_profile):
    prof = standin_profile()
    assert memoria("up", "-d", "-p", str(prof)).returncode == 0
    before = status(memoria)["processes"]["beta"]["pid"]
    r = memoria("restart", "beta")
    assert r.returncode == 0, r.stderr
    after = wait_for(lambda: (p := status(memoria)["processes"]["beta"])["state"] == "ready" and p)
    assert after["pid"] != before and after["restarts"] == 1
    assert memoria("restart", "gamma").returncode == 3


def test_foreground_up_stops_everything_on_ctrl_c(home, memoria, standin_profile):
    prof = standin_profile(env_b={"STANDIN_GRANDCHILD": "1"})
    fg = subprocess.Popen(
        [sys.executable, "-m", "memoria_cli", "up", "-p", str(prof)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: memoria("status").returncode == 0 and status(memoria)["phase"] == "running")
        fg.send_signal(signal.SIGINT)
        _, err = fg.communicate(timeout=60)
        assert fg.returncode == 0, err
        assert "ready: http://127.0.0.1:" in err and "stopped" in err
        assert marked(Home.from_env().marker) == []
        assert memoria("status").returncode == 8
    finally:
        fg.kill()


def test_down_stops_the_supervisor_even_when_state_json_is_corrupt(home, memoria, standin_profile):
    """The lock names the supervisor whatever state.json says: left running, it would restart every worker."""
    prof = standin_profile()
    assert memoria("up", "-d", "-p", str(prof)).returncode == 0
    sup = psutil.Process(status(memoria)["supervisor"]["pid"])
    (home / "state.json").write_text("{not json")
    r = memoria("down")
    assert r.returncode == 0, r.stderr
    assert "corrupt" in r.stderr and "stopped" in r.stderr
    assert not sup.is_running() or sup.status() == psutil.STATUS_ZOMBIE
    time.sleep(3)  # long enough for a surviving supervisor to have started the workers again
    assert marked(Home.from_env().marker) == []
    assert memoria("up", "-d", "-p", str(prof)).returncode == 0  # and the home is usable again


def test_ctrl_c_during_up_d_stops_what_was_starting(home, standin_profile):
    prof = standin_profile(env_a={"STANDIN_START_DELAY": "30"})
    up = subprocess.Popen(
        [sys.executable, "-m", "memoria_cli", "up", "-d", "-p", str(prof)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = Home.from_env().marker
    wait_for(lambda: "alpha" in roles(marker), 30)
    up.send_signal(signal.SIGINT)
    _, err = up.communicate(timeout=60)
    assert up.returncode == 130, err
    assert "stopping what was starting" in err
    assert marked(marker) == []  # the supervisor and what it started are gone
    r = run_memoria("status")
    assert r.returncode == 8


def test_the_home_is_private_to_its_owner(home, memoria, standin_profile):
    """Logs hold prompts and answers; state and config who runs what: 0700 folders, 0600 files."""
    import stat

    prof = standin_profile()
    assert memoria("up", "-d", "-p", str(prof)).returncode == 0
    try:
        for d in (home, home / "logs", home / "cache"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        for f in (home / "state.json", home / "litellm.yaml", *(home / "logs").glob("*.log")):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        memoria("down")
