"""One supervisor per home: an flock on supervisor.lock, held for the supervisor's life, with its pid inside.
The kernel drops a flock with its holder, so a held lock is a live supervisor whatever state.json says."""

from __future__ import annotations

import fcntl
import os

from memoria_cli.core.errors import PreflightError
from memoria_cli.core.home import Home
from memoria_cli.run.files import ensure_home


def _try_lock(fd: int) -> int | None:
    """Take the lock on `fd`; when another process holds it, that process's pid (0 when it wrote none yet)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        text = os.read(fd, 64).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0


def acquire_lock(home: Home) -> int:
    """Hold the home's supervisor lock for this process's life, or say who holds it."""
    ensure_home(home)
    fd = os.open(home.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    holder = _try_lock(fd)
    if holder is not None:
        os.close(fd)
        raise PreflightError(
            f"memoria is already running for {home.root} (supervisor pid {holder or '?'})",
            "`memoria status` shows it, `memoria down` stops it",
        )
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def lock_holder(home: Home) -> int | None:
    """The pid of the supervisor holding this home's lock, whatever state.json says (it may be corrupt or
    gone); None when nobody holds it."""
    try:
        fd = os.open(home.lock_file, os.O_RDWR)
    except OSError:
        return None
    try:
        holder = _try_lock(fd)
        if holder is None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return holder or None
    finally:
        os.close(fd)


def refuse_if_running(home: Home) -> None:
    """The "already running" error now, before a detached start, rather than from the child; worded for a
    stack that systemd runs (`memoria service`), which `up` must not start a second time."""
    from memoria_cli.core.service_unit import systemctl_line
    from memoria_cli.run.state import read_state

    try:
        release_lock(acquire_lock(home))
    except PreflightError:
        state, _ = read_state(home.state_file)
        if state is not None and state.service and state.supervisor_alive:
            raise PreflightError(
                f"memoria already runs here as the systemd service {state.service.rpartition(':')[2]}",
                f"`memoria service status` shows it; `{systemctl_line(state.service, 'restart')}` restarts it",
            ) from None
        raise


def release_lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
