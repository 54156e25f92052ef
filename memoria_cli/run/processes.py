"""Process side effects: spawn in its own session, stop a whole group, sweep marked leftovers, port owners.

vLLM's engine-core children outlive a killed API server, and LiteLLM's workers outlive their parent: so
every child runs in a new session (its pid is its group id), stop signals the group, and a final sweep
finds any survivor by the marker variable memoria put in its environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

import psutil

from memoria_cli.core.worker_spec import MARKER_ENV, ProcessSpec
from memoria_cli.run.files import open_log
from memoria_cli.run.state import is_ours


@dataclass
class Child:
    """A running process we started: enough to poll it and to recognise it later."""

    pid: int
    create_time: float
    popen: subprocess.Popen[bytes] | None = None

    def poll(self) -> int | None:
        """Exit code once it ended, else None (works for a child of another process too)."""
        if self.popen is not None:
            return self.popen.poll()
        return None if is_ours(self.pid, self.create_time) else -1


def child_env(spec: ProcessSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for k in spec.remove_env:
        env.pop(k, None)
    env.update(spec.env)
    return env


def spawn(spec: ProcessSpec, extra_env: dict[str, str] | None = None) -> Child:
    assert spec.log is not None
    with open_log(spec.log) as log:
        log.write(f"\n==== memoria: starting {spec.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            list(spec.argv),
            env={**child_env(spec), **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    try:
        ct = psutil.Process(popen.pid).create_time()
    except psutil.NoSuchProcess:
        ct = 0.0
    return Child(pid=popen.pid, create_time=ct, popen=popen)


def group_members(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return out


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_groups(children: list[Child], grace: float) -> None:
    """SIGTERM every group, wait up to `grace` for all to end, then SIGKILL what is left."""
    for c in children:
        _signal_group(c.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for c in children:
            c.poll()  # reap our own zombies so the group can empty
        if not any(group_members(c.pid) for c in children):
            return
        time.sleep(0.1)
    for c in children:
        _signal_group(c.pid, signal.SIGKILL)
    time.sleep(0.2)
    for c in children:
        c.poll()


def marked(marker: str) -> list[psutil.Process]:
    """Live processes carrying this home's marker (read from their environment), i.e. ours and only ours."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(MARKER_ENV, "").startswith(marker + "/") and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def sweep(marker: str, grace: float = 5.0) -> list[int]:
    """Terminate, then kill, every process left with our marker. Returns their pids."""
    procs = marked(marker)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=2)
    return [p.pid for p in procs]


def port_owner(port: int, host: str = "127.0.0.1") -> str | None:
    """None if we could listen on `port`; else who holds it ("pid 123 (python3)" when the OS says)."""
    host = "127.0.0.1" if host == "localhost" else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # '::1' is not a port taken: it is IPv6
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
            return None
        except OSError:
            pass
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                try:
                    name = psutil.Process(c.pid).name()
                except psutil.NoSuchProcess:
                    name = "?"
                return f"pid {c.pid} ({name})"
    except (psutil.AccessDenied, OSError):
        pass
    return "another process"


def interface_of(address: str) -> str | None:
    """The name of this machine's network interface that holds `address` (e.g. eth0), or None."""
    want = address.strip("[]")
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address.split("%", 1)[0] == want for a in addrs):
            return name
    return None
