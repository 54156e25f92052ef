"""Shell completion's answers: profile names, and the running stack's worker and model names.

Called by the shell on every Tab (typer's protocol: the `_MEMORIA_COMPLETE` variable, scripts from
`memoria completion SHELL`), so each reads a file or two and never raises: a completion that fails offers
nothing rather than printing a traceback into the user's command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memoria_cli.run.state import RunState

COMPLETE_VAR = "_MEMORIA_COMPLETE"  # typer's name for prog "memoria": _{PROG}_COMPLETE
SHELLS = ("bash", "zsh", "fish")


def _state() -> RunState | None:
    try:
        from memoria_cli.core.home import Home
        from memoria_cli.run.state import read_state

        return read_state(Home.from_env().state_file)[0]
    except Exception:  # an empty MEMORIA_HOME, an unreadable home: nothing to offer
        return None


def profiles(incomplete: str) -> list[str]:
    """Shipped and $MEMORIA_PROFILES profiles by name, and YAML files by path."""
    try:
        from memoria_cli.core.profile import shipped_profiles

        names = [p.stem for p in shipped_profiles()]
    except Exception:
        names = []
    folder = Path(incomplete).parent if "/" in incomplete else Path(".")
    try:
        files = [str(p) if "/" in incomplete else p.name for p in sorted(folder.glob("*.y*ml"))]
    except OSError:
        files = []
    return [n for n in dict.fromkeys([*names, *files]) if n.startswith(incomplete)]


def processes(incomplete: str) -> list[str]:
    """The running stack's workers and `proxy` (for `restart`)."""
    state = _state()
    return [n for n in (state.processes if state else {}) if n.startswith(incomplete)]


def logs(incomplete: str) -> list[str]:
    """Every log there is (workers, proxy, supervisor), running or not."""
    try:
        from memoria_cli.core.home import Home

        found = sorted(p.stem for p in Home.from_env().logs.glob("*.log"))
    except Exception:
        found = []
    return [n for n in found if n.startswith(incomplete)]


def models(incomplete: str) -> list[str]:
    """The running stack's model names and aliases (else the default profile's)."""
    state = _state()
    names: list[str] = []
    if state is not None:
        for n, p in state.workers().items():
            names += [n, *p.aliases]
    else:
        try:
            from memoria_cli.core.profile import load_profile

            for m in load_profile("default").models:
                names += [m.name, *m.aliases]
        except Exception:
            pass
    return [n for n in dict.fromkeys(names) if n.startswith(incomplete)]


def script(shell: str) -> str:
    """The script that hooks `memoria` into `shell` (typer's own, for its protocol; typer is pinned)."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="memoria", complete_var=COMPLETE_VAR, shell=shell)
