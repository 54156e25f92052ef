"""`memoria up`: plan, preflight, start every worker and the proxy, and keep them running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from memoria_cli.cli.options import AS_HOST, PROFILE

if TYPE_CHECKING:
    from memoria_cli.core.errors import MemoriaError
    from memoria_cli.core.home import Home
    from memoria_cli.run.stack import Stack
    from memoria_cli.run.state import RunState
    from memoria_cli.run.supervisor import Supervisor


def register(app: typer.Typer) -> None:
    app.command(name="up")(up_cmd)


def up_cmd(
    profile: str = PROFILE,
    as_host: str | None = AS_HOST,
    detach: bool = typer.Option(
        False,
        "--detach",
        "-d",
        help="Return once everything is ready; keep running in the background (stop with `memoria down`).",
    ),
) -> None:
    """Start the stack: one vLLM worker per model, sized by the plan, behind the proxy on :8200.

    In the foreground it shows a live status and Ctrl-C stops everything. With `-d` it returns once all
    is ready, or fails with the failing worker's last log lines.

    Example: `memoria up -d --profile demo`, then `memoria status`. In a cluster profile each host runs
    its own share: `memoria up -d -p cluster.yaml --as gpu-b` (README: "More than one machine").
    """
    from memoria_cli.commands.pull import pull_missing
    from memoria_cli.core.home import Home
    from memoria_cli.run.lock import refuse_if_running
    from memoria_cli.run.stack import preflight, prepare, profile_for

    home = Home.from_env()
    pull_missing(profile_for(profile, as_host)[1])  # models from the store first: the plan reads their config.json
    stack = prepare(home, profile, as_host=as_host)  # plan, runtimes, auth: fails before anything starts
    refuse_if_running(home)
    if detach:
        from memoria_cli.cli.console import say

        for note in preflight(stack):
            say(f"memoria: {note}")
        _detached(home, stack)
    else:
        _foreground(stack)


def _foreground(stack: Stack) -> None:
    from rich.live import Live
    from rich.table import Table

    from memoria_cli.cli.console import err
    from memoria_cli.cli.views import STATE_STYLE
    from memoria_cli.run.loop import supervise

    announced = False

    def render(sup: Supervisor) -> Table:
        t = Table.grid(padding=(0, 2))
        for p in sup.procs:
            style = STATE_STYLE.get(p.state.value, "")
            t.add_row(p.name, f"[{style}]{p.state.value}[/]", p.reason)
        return t

    with Live(console=err(), refresh_per_second=2, transient=False) as live:

        def on_tick(sup: Supervisor, phase: str) -> None:
            nonlocal announced
            live.update(render(sup))
            if phase == "running" and not announced:
                announced = True
                err().print(f"[green]ready[/]: {stack.url} (Ctrl-C stops everything)")

        supervise(stack, on_tick=on_tick)
    err().print("stopped")


def _detached(home: Home, stack: Stack) -> None:
    """Start the supervisor in its own session with the plan shown here, then follow state.json until ready
    or failed."""
    from memoria_cli.cli.console import err, out
    from memoria_cli.cli.views import status_table
    from memoria_cli.core.errors import Interrupted
    from memoria_cli.run.detach import Handoff, clean, write_handoff
    from memoria_cli.run.files import ensure_home, open_log
    from memoria_cli.run.loop import SUPERVISOR_LOG

    ensure_home(home)
    log = home.logs / SUPERVISOR_LOG
    handoff = write_handoff(home, Handoff(str(stack.profile.source), stack.plan, stack.host))
    # Not marked like the workers: a racing `up` sweeps marked leftovers, and must not take a supervisor that
    # has not yet taken the lock for one. `down` finds it by its lock (run/lock.lock_holder).
    with open_log(log) as f:
        child = subprocess.Popen(
            [sys.executable, "-m", "memoria_cli", "_supervise", "--handoff", str(handoff)],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    try:
        state, t0 = _wait_ready(home, child, handoff)
    except (KeyboardInterrupt, Interrupted):
        # Ctrl-C while it starts: stop what was started rather than leave it starting in the background.
        err().print("interrupted: stopping what was starting...")
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    finally:
        if child.poll() is not None:
            clean(handoff)
    handoff.unlink(missing_ok=True)  # read by the child long ago; a failure file may still come, at a stop
    out().print(status_table(state, {}, {}))
    err().print(f"[green]ready[/] in {time.monotonic() - t0:.0f} s: {stack.url}  (`memoria down` stops it)")


def _wait_ready(home: Home, child: subprocess.Popen[bytes], handoff: Path) -> tuple[RunState, float]:
    """Follow state.json until the detached supervisor says running, or raise its failure."""
    from memoria_cli.cli.console import err
    from memoria_cli.run.state import read_state

    t0 = time.monotonic()
    with err().status("starting...") as spinner:
        while True:
            rc = child.poll()
            state, _ = read_state(home.state_file)
            mine = state if state and state.supervisor.pid == child.pid else None
            if mine and mine.phase == "running":
                return mine, t0
            if rc is not None or (mine and mine.ended):
                child.wait()
                raise _start_failure(home, mine, handoff)
            if mine:
                procs = mine.processes
                ready = [n for n, p in procs.items() if p.state == "ready"]
                busy = [f"{n} {p.state}" for n, p in procs.items() if p.state != "ready"]
                spinner.update(
                    f"{time.monotonic() - t0:.0f}s: ready {len(ready)}/{len(procs)}"
                    + (f" - {', '.join(busy)}" if busy else "")
                )
            time.sleep(0.5)


def _start_failure(home: Home, state: RunState | None, handoff: Path) -> MemoriaError:
    """The error for a failed detached start: the worker that went FATAL with its log tail, else the error the
    supervisor handed back."""
    from memoria_cli.core.errors import StartError
    from memoria_cli.run.detach import read_failure
    from memoria_cli.run.logs import tail

    failed = [(n, p) for n, p in (state.processes if state else {}).items() if p.state == "fatal"]
    if failed:
        name, p = failed[0]
        lines = "\n".join("  | " + ln for ln in tail(home.log_for(name), 15))
        from memoria_cli.cli.console import say

        say(f"last lines of {home.log_for(name)}:\n{lines}")
        return StartError(f"{name} could not start: {p.reason}", f"see `memoria logs {name}`")
    failure = read_failure(handoff)
    if failure:
        return failure.error()
    return StartError("the supervisor stopped before the stack was ready", f"see {home.logs / 'supervisor.log'}")
