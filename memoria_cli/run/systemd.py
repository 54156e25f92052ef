"""systemctl, for `memoria service`: a thin layer. On a machine where systemd is not the init (a container,
WSL without it), nothing is called and the caller says so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

BOOTED = Path("/run/systemd/system")  # sd_booted(3): this exists when systemd is the init


def available() -> str | None:
    """None when systemctl can be used here; else why not, in a few words."""
    if shutil.which("systemctl") is None:
        return "systemctl is not installed"
    if not BOOTED.is_dir():
        return "systemd is not running on this machine"
    return None


def systemctl(system: bool, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = ["systemctl", *([] if system else ["--user"]), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def state(system: bool, unit: str) -> tuple[str, str]:
    """(is-enabled, is-active) as systemctl words them ('enabled', 'active', 'inactive', 'failed'...)."""
    enabled = systemctl(system, "is-enabled", unit, timeout=10).stdout.strip() or "unknown"
    active = systemctl(system, "is-active", unit, timeout=10).stdout.strip() or "unknown"
    return enabled, active
