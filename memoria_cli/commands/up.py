"""`memoria up`: plan, preflight, start every worker and the proxy, and keep them running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import typer

from memoria_cli.commands.options import PROFILE


def register(app: typer.Typer) -> None:
    app.command(name="up")(up_cmd)


def up_cmd(
    profile: str = PROFILE,
    detach: bool = typer.Option(False, "--detach", "-d", help="Return once everything is ready; keep running "
                                "in the background (stop with `memoria down`)."),
) -> None:
    """Start the stack: one vLLM worker per model, sized by the plan, behind the proxy on :8200.

    In the foreground it shows a live status and Ctrl-C stops everything. With `-d` it returns once all
    is ready, or fails with the failing worker's last log lines.

    Example: `memoria up -d --profile demo`, then `memoria status`.
    """
    from memoria_cli.commands.pull import pull_missing
    from memoria_cli.daemon import preflight, prepare, refuse_if_running
    from memoria_cli.home import Home
    from memoria_cli.profile import load_profile

    home = Home.from_env()
    pull_missing(load_profile(profile))  # models from the store first: the plan reads their config.json
    stack = prepare(home, profile)  # plan, runtimes, auth: fails before anything starts
    refuse_if_running(home)
    if detach:
        from memoria_cli.console import say

        for note in preflight(stack):
            say(f"memoria: {note}")
        _detached(home, stack)
    else:
        _foreground(stack)


def _foreground(stack) -> None:
    from rich.live import Live

    from memoria_cli.console import err
    from memoria_cli.daemon import supervise
    from memoria_cli.views import STATE_STYLE

    announced = False

    def render(sup, phase):
        from rich.table import Table

        t = Table.grid(padding=(0, 2))
        for p in sup.procs:
            style = STATE_STYLE.get(p.state.value, "")
            t.add_row(p.name, f"[{style}]{p.state.value}[/]", p.reason)
        return t

    with Live(console=err(), refresh_per_second=2, transient=False) as live:
        def on_tick(sup, phase):
            nonlocal announced
            live.update(render(sup, phase))
            if phase == "running" and not announced:
                announced = True
                err().print(f"[green]ready[/]: {stack.url} (Ctrl-C stops everything)")

        supervise(stack, on_tick=on_tick)
    err().print("stopped")


def _detached(home, stack) -> None:
    """Start the supervisor in its own session, then follow state.json until ready or failed."""
    from memoria_cli.console import err, out
    from memoria_cli.views import status_table

    home.ensure()
    log = home.logs / "supervisor.log"
    src = str(stack.profile.source)
    # Not marked like the workers: a racing `up` sweeps marked leftovers, and must not take a supervisor that
    # has not yet taken the lock for one. `down` finds it by its lock (daemon.lock_holder).
    with open(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as f:
        child = subprocess.Popen([sys.executable, "-m", "memoria_cli", "_supervise", "--profile", src],
                                 stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
    from memoria_cli.errors import Interrupted

    try:
        state, t0 = _wait_ready(home, child, log)
    except (KeyboardInterrupt, Interrupted):
        # Ctrl-C while it starts: stop what was started rather than leave it starting in the background.
        err().print("interrupted: stopping what was starting...")
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    out().print(status_table(state, {}, {}))
    err().print(f"[green]ready[/] in {time.monotonic() - t0:.0f} s: {stack.url}  (`memoria down` stops it)")


def _wait_ready(home, child, log):
    """Follow state.json until the detached supervisor says running, or raise its failure."""
    from memoria_cli.console import err
    from memoria_cli.daemon import tail
    from memoria_cli.state import read_state

    t0 = time.monotonic()
    state = None
    with err().status("starting...") as spinner:
        while True:
            rc = child.poll()
            state, _ = read_state(home.state_file)
            mine = state and (state.get("supervisor") or {}).get("pid") == child.pid
            if mine and state["phase"] == "running":
                break
            if rc is not None or (mine and state["phase"] in ("failed", "stopped")):
                child.wait()
                raise _start_failure(home, child.pid, child.returncode, state if mine else None, tail(log, 200))
            if mine:
                procs = state["processes"]
                ready = [n for n, p in procs.items() if p["state"] == "ready"]
                busy = [f"{n} {p['state']}" for n, p in procs.items() if p["state"] != "ready"]
                spinner.update(f"{time.monotonic() - t0:.0f}s: ready {len(ready)}/{len(procs)}"
                               + (f" - {', '.join(busy)}" if busy else ""))
            time.sleep(0.5)
    return state, t0


def _start_failure(home, pid: int, rc: int, state, sup_log: list[str]):
    """The error for a failed detached start: the supervisor's own error line, and the worker's log tail."""
    from memoria_cli.daemon import tail
    from memoria_cli.errors import MemoriaError, StartError

    mine = [ln.split("error: ", 1)[-1] for ln in sup_log if ln.startswith(f"memoria[{pid}]: error:")]
    failed = [(n, p) for n, p in ((state or {}).get("processes") or {}).items() if p["state"] == "fatal"]
    if failed:
        name, p = failed[0]
        lines = "\n".join("  | " + ln for ln in tail(home.log_for(name), 15))
        from memoria_cli.console import say

        say(f"last lines of {home.log_for(name)}:\n{lines}")
        return StartError(f"{name} could not start: {p['reason']}", f"see `memoria logs {name}`")
    if mine:
        error = MemoriaError(mine[-1])
        error.exit_code = rc if rc > 0 else StartError.exit_code  # the supervisor's own documented code
        return error
    return StartError("the supervisor stopped before the stack was ready",
                      f"see {home.logs / 'supervisor.log'}")
