"""state.json: what the supervisor runs, for `status`, `logs`, `down` in any other process.

Written atomically on every change. A process recorded here is ours only if its pid AND create_time still
match (pids are reused). A corrupt file is set aside, never trusted, and the caller rebuilds from what runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from memoria_cli.files import write_atomic

STATE_VERSION = 1


def read_state(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(state or None, a note when a corrupt file was set aside)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path}: {exc}"
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION or not _well_formed(data):
            raise ValueError("unknown layout")
        return data, None
    except (ValueError, UnicodeDecodeError):
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            path.rename(aside)
        except OSError:
            return None, f"{path} is corrupt and could not be moved aside"
        return None, f"{path} was corrupt: set aside as {aside.name}"


def _well_formed(data: dict[str, Any]) -> bool:
    """The shape every reader relies on; anything else is corrupt (set aside), not a crash in `status`."""
    sup, procs, plan = data.get("supervisor", {}), data.get("processes", {}), data.get("plan", {})
    if not (isinstance(sup, dict) and isinstance(procs, dict) and isinstance(plan, dict)):
        return False
    for p in procs.values():
        if not (isinstance(p, dict) and isinstance(p.get("state"), str) and isinstance(p.get("port"), int)):
            return False
        if p.get("pid") is not None and not isinstance(p["pid"], int):
            return False
    workers, devices = plan.get("workers", []), plan.get("devices", [])
    return (isinstance(workers, list) and all(isinstance(w, dict) and isinstance(w.get("name"), str)
                                              for w in workers)
            and isinstance(devices, list) and all(isinstance(d, dict) for d in devices)
            and (data.get("url") is None or isinstance(data["url"], str)))


def write_state(path: Path, state: dict[str, Any]) -> None:
    write_atomic(path, json.dumps({**state, "version": STATE_VERSION, "updated_at": time.time()}, indent=2))


def is_ours(pid: int | None, create_time: float | None) -> bool:
    """True only if `pid` runs and started when we recorded: a reused pid is someone else's process."""
    if not pid or create_time is None:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        # A killed process whose parent never reaps it stays a zombie: dead, whatever its pid says.
        return abs(proc.create_time() - create_time) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def supervisor_alive(state: dict[str, Any] | None) -> bool:
    sup = (state or {}).get("supervisor") or {}
    return is_ours(sup.get("pid"), sup.get("create_time"))
