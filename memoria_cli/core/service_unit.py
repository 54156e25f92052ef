"""The systemd unit that runs memoria's supervisor as a service: rendered here, pure; installed by
`memoria service` (commands/service.py).

The unit runs `memoria up` in the foreground (Type=simple: the supervisor is the main process), so systemd
sees exactly what memoria sees: the supervisor stops on SIGTERM and takes its workers down, and a supervisor
that dies is restarted. KillMode=control-group (systemd's default, stated): on stop every process of the unit
gets SIGTERM, so no vLLM worker outlives its supervisor. The master key, when there is one, is read from a
0600 EnvironmentFile in the home, never written into the unit (units are world-readable) or an argv."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNIT = "memoria.service"
SERVICE_ENV = "MEMORIA_SERVICE"  # set in the unit ('user:memoria.service'): recorded as state.json's `service`
HEADER = "# written by memoria (`memoria service install`); `memoria service uninstall` removes it"


def stop_timeout(grace: float) -> int:
    """How long systemd waits for `memoria up` to stop before SIGKILL: the supervisor's stop_all gives the
    proxy, then the workers, `supervision.grace` each (run/supervisor.py), plus room for its own exit."""
    return int(2 * grace + 30)


@dataclass(frozen=True)
class UnitSpec:
    python: str  # the interpreter memoria is installed in
    profile: str  # a profile's name or an absolute path
    home: Path
    runtimes: Path
    system: bool  # a system unit (multi-user.target) rather than the user's own
    user: str | None = None  # with `system`: the account that runs it
    env_file: Path | None = None  # 0600, holds LITELLM_MASTER_KEY when one is set
    grace: float = 15.0  # the profile's supervision.grace


def unit_text(spec: UnitSpec) -> str:
    """The unit file, ready to write."""
    service = [
        "Type=simple",
        f"ExecStart={_quote(spec.python)} -m memoria_cli up --profile {_quote(spec.profile)}",
        f"Environment={_quote('MEMORIA_HOME=' + str(spec.home))}",
        f"Environment={_quote('MEMORIA_RUNTIMES=' + str(spec.runtimes))}",
        f"Environment={SERVICE_ENV}={'system' if spec.system else 'user'}:{UNIT}",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if spec.env_file is not None:
        service.append(f"EnvironmentFile={_quote(str(spec.env_file))}")
    if spec.system and spec.user:
        service.append(f"User={spec.user}")
    service += [
        "Restart=on-failure",
        "RestartSec=10",
        "KillMode=control-group",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={stop_timeout(spec.grace)}",
        "LimitNOFILE=65536",  # vLLM and the proxy hold a socket per connection
    ]
    lines = [
        HEADER,
        "[Unit]",
        f"Description=memoria: one OpenAI-compatible endpoint for this machine's models ({spec.profile})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if spec.system else 'default.target'}",
    ]
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    """A word systemd reads back whole: quoted when it holds a space or a quote (systemd.syntax(7))."""
    if not any(c in value for c in " \t\"'\\"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_dir(system: bool, environ: dict[str, str], home_dir: Path) -> Path:
    """Where systemd looks for the unit: /etc/systemd/system, or the user's $XDG_CONFIG_HOME/systemd/user."""
    if system:
        return Path("/etc/systemd/system")
    config = environ.get("XDG_CONFIG_HOME") or str(home_dir / ".config")
    return Path(config) / "systemd" / "user"


def systemctl_line(service: str, verb: str) -> str:
    """The command that does `verb` to the unit named by a MEMORIA_SERVICE value ('user:memoria.service')."""
    scope, _, unit = service.rpartition(":")
    return f"systemctl{'' if scope == 'system' else ' --user'} {verb} {unit}"


def is_ours(text: str) -> bool:
    return text.startswith(HEADER)
