"""`memoria down`: stop the stack (proxy first, then workers), leaving nothing behind."""

from __future__ import annotations

import os
import signal
import time

import typer


def register(app: typer.Typer) -> None:
    app.command(name="down")(down_cmd)


def down_cmd(
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for a clean stop before killing."),
) -> None:
    """Stop everything memoria started for this home: proxy, workers and any process they left.

    In-flight requests get the workers' shutdown grace. Safe to run when nothing runs.
    Example: `memoria down`.
    """
    from dataclasses import replace

    from memoria_cli.cli.console import err, say
    from memoria_cli.core.home import Home
    from memoria_cli.run import processes
    from memoria_cli.run.lock import lock_holder
    from memoria_cli.run.state import read_state, supervisor_alive, write_state

    home = Home.from_env()
    state, note = read_state(home.state_file)
    if note:
        say(f"memoria: {note}")
    # The supervisor is found by state.json, or by the lock it holds when state.json is corrupt or gone:
    # a live supervisor left running would start every worker again within seconds.
    pid = state.supervisor.pid if state and supervisor_alive(state) else lock_holder(home)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid = None
    if pid:
        with err().status(f"stopping (supervisor pid {pid})..."):
            deadline = time.monotonic() + timeout
            while lock_holder(home) == pid and time.monotonic() < deadline:
                time.sleep(0.2)
        if lock_holder(home) == pid:
            say(f"memoria: the supervisor did not stop within {timeout:.0f} s: killing it")
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 10.0)  # it lets go of the lock just before it exits: `down` returns once it has
    left = processes.sweep(home.marker)
    if left:
        say(f"memoria: stopped {len(left)} leftover process(es)")
    if state is None and not left and not pid:
        say("memoria is not running")
        return
    if state is not None:
        state, _ = read_state(home.state_file)
        if state and not state.ended:
            for p in state.processes.values():
                p.state = "stopped"
            write_state(home.state_file, replace(state, phase="stopped"))
    ports = [p.port for p in state.processes.values()] if state else []
    busy = [f"{port} ({owner})" for port in ports if (owner := processes.port_owner(port))]
    if busy:
        say(f"memoria: stopped, but these ports are still taken: {', '.join(busy)}")
    else:
        say("stopped" + (f"; ports {', '.join(map(str, sorted(ports)))} are free" if ports else ""))
    if state is not None and state.service:
        from memoria_cli.core.service_unit import systemctl_line

        say(f"memoria: it ran as a systemd service; `{systemctl_line(state.service, 'start')}` starts it again")


def _wait_gone(pid: int, timeout: float) -> None:
    """Until `pid` has exited (a zombie counts: it is not ours to reap), at most `timeout` seconds."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.Error:
            return
        time.sleep(0.05)
