"""`memoria service install|uninstall|status`: the stack as a systemd service that survives a reboot."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from memoria_cli.cli.options import PROFILE

service_app = typer.Typer(
    help="Run the stack as a systemd service (user unit; --system for a system unit).\n\n"
    "`install` writes memoria.service for a profile and enables and starts it; `status` shows the unit and the "
    "stack; `uninstall` stops and removes it. A user unit runs while you are logged in unless lingering is on "
    "(`loginctl enable-linger $USER`). Example: `memoria service install -p demo`.",
    no_args_is_help=True,
)
SYSTEM = typer.Option(False, "--system", help="A system unit in /etc/systemd/system (needs root).")
ENV_FILE = "service.env"  # in the home, 0600: the master key the unit reads


def register(app: typer.Typer) -> None:
    app.add_typer(service_app, name="service")


def _where(system: bool) -> Path:
    from memoria_cli.core.service_unit import UNIT, unit_dir

    if system and os.geteuid() != 0:
        from memoria_cli.core.errors import InputError

        raise InputError("a system unit needs root", "run it with sudo, or drop --system for a user unit")
    return unit_dir(system, dict(os.environ), Path.home()) / UNIT


@service_app.command("install")
def install_cmd(
    profile: str = PROFILE,
    system: bool = SYSTEM,
    start: bool = typer.Option(True, "--start/--no-start", help="Enable and start it now (else only write it)."),
) -> None:
    """Write memoria.service for PROFILE, then enable and start it. Refuses a unit file memoria did not write."""
    from memoria_cli.cli.console import say
    from memoria_cli.core.errors import PreflightError
    from memoria_cli.core.home import Home
    from memoria_cli.core.profile import load_profile
    from memoria_cli.core.proxy_config import MASTER_KEY_ENV, auth_env
    from memoria_cli.core.service_unit import UNIT, UnitSpec, is_ours, unit_text
    from memoria_cli.run import systemd
    from memoria_cli.run.files import ensure_home, write_atomic
    from memoria_cli.run.runtimes import Runtimes
    from memoria_cli.run.state import read_state, supervisor_alive

    home = Home.from_env()
    prof = load_profile(profile)  # a bad profile is refused now, not in a restart loop
    auth, _ = auth_env(prof.proxy.host)  # beyond loopback: a key, or no service
    Runtimes(home.runtimes).require()
    path = _where(system)
    if path.exists() and not is_ours(path.read_text(errors="replace")):
        raise PreflightError(f"{path} exists and memoria did not write it", "move it away, then install again")
    state, _ = read_state(home.state_file)
    if start and supervisor_alive(state) and state is not None and not state.service:
        raise PreflightError(
            "memoria is running already (started by `memoria up`)",
            "stop it with `memoria down` first, or install with --no-start",
        )
    ensure_home(home)
    env_file = None
    if auth:
        env_file = home.root / ENV_FILE
        write_atomic(env_file, f"{MASTER_KEY_ENV}={os.environ[MASTER_KEY_ENV]}\n")  # 0600
    # a profile given by path is kept by its absolute path: the service does not start in this folder
    source = prof.source
    named = "/" not in profile and Path(profile).suffix not in (".yaml", ".yml")
    spec = UnitSpec(
        python=sys.executable,
        profile=profile if named or source is None else str(Path(source).resolve()),
        home=home.root,
        runtimes=home.runtimes,
        system=system,
        user=os.environ.get("SUDO_USER") if system else None,
        env_file=env_file,
        grace=prof.supervision.grace,
    )
    write_atomic(path, unit_text(spec), private=False)
    say(f"wrote {path}" + (f" (the key is read from {env_file}, mode 0600)" if env_file else ""))
    why = systemd.available()
    if why:
        say(
            f"memoria: {why}, so the unit was not enabled; where systemd runs: {_systemctl(system)} enable --now {UNIT}"
        )
        return
    for args in (["daemon-reload"], ["enable", *(["--now"] if start else []), UNIT]):
        r = systemd.systemctl(system, *args)
        if r.returncode != 0:
            raise PreflightError(f"`{_systemctl(system)} {' '.join(args)}` failed: {r.stderr.strip()[:300]}")
    say(
        f"{UNIT} enabled"
        + (
            " and started: `memoria status` follows it"
            if start
            else f"; start it with {_systemctl(system)} start {UNIT}"
        )
    )
    if not system:
        say("memoria: a user unit stops when you log out unless lingering is on: loginctl enable-linger $USER")


@service_app.command("uninstall")
def uninstall_cmd(system: bool = SYSTEM) -> None:
    """Stop and disable memoria.service, then remove the unit (only a unit memoria wrote) and its key file."""
    from memoria_cli.cli.console import say
    from memoria_cli.core.errors import NotRunning, PreflightError
    from memoria_cli.core.home import Home
    from memoria_cli.core.service_unit import UNIT, is_ours
    from memoria_cli.run import systemd

    path = _where(system)
    if not path.exists():
        raise NotRunning(
            f"no {UNIT} at {path}", "nothing to remove" + ("" if system else " (a system unit? add --system)")
        )
    if not is_ours(path.read_text(errors="replace")):
        raise PreflightError(f"{path} was not written by memoria", "remove it yourself if it should go")
    if systemd.available() is None:
        systemd.systemctl(system, "disable", "--now", UNIT)
        path.unlink()
        systemd.systemctl(system, "daemon-reload")
    else:
        path.unlink()
    (Home.from_env().root / ENV_FILE).unlink(missing_ok=True)
    say(f"removed {path}")


@service_app.command("status")
def status_cmd(system: bool = SYSTEM) -> None:
    """Whether memoria.service is installed, enabled and active, and what the stack is doing."""
    from memoria_cli.cli.console import say
    from memoria_cli.core.home import Home
    from memoria_cli.core.service_unit import UNIT, is_ours
    from memoria_cli.run import systemd
    from memoria_cli.run.state import read_state, supervisor_alive

    path = _where(system)
    if not path.exists():
        say(f"{UNIT}: not installed ({path})")
    else:
        mine = "" if is_ours(path.read_text(errors="replace")) else " (not written by memoria)"
        why = systemd.available()
        if why:
            say(f"{UNIT}: installed at {path}{mine}; {why}")
        else:
            enabled, active = systemd.state(system, UNIT)
            say(f"{UNIT}: installed at {path}{mine}, {enabled}, {active}")
    state, _ = read_state(Home.from_env().state_file)
    if supervisor_alive(state) and state is not None:
        how = f"by {state.service.rpartition(':')[2]}" if state.service else "by `memoria up`, not the service"
        say(f"stack: {state.profile} {state.phase} at {state.url}, run {how}")
    else:
        say("stack: not running")


def _systemctl(system: bool) -> str:
    return "systemctl" if system else "systemctl --user"
