"""`memoria logs NAME`: a worker's (or the proxy's, or the supervisor's) log."""

from __future__ import annotations

import sys
import time

import typer

from memoria_cli.cli import completion


def register(app: typer.Typer) -> None:
    app.command(name="logs")(logs_cmd)


def logs_cmd(
    name: str = typer.Argument(..., help="A worker's name, `proxy`, or `supervisor`.", autocompletion=completion.logs),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C to stop)."),
    lines: int = typer.Option(50, "--lines", "-n", help="How many of the last lines to show."),
) -> None:
    """Print the last lines of a log under the memoria home. Example: `memoria logs qwen3-4b-thinking-fp8 -f`."""
    import re

    from memoria_cli.core.errors import InputError, Interrupted, Terminated
    from memoria_cli.core.home import Home
    from memoria_cli.run.logs import tail

    if lines < 1 or lines > 1_000_000:
        raise InputError(f"--lines {lines} is out of range", "give 1 to 1000000")
    home = Home.from_env()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or len(name) > 200:
        raise InputError(f"{name!r} is not a worker name", "give a name as `memoria status` lists it")
    path = home.log_for(name)
    if not path.is_file():
        known = sorted(p.stem for p in home.logs.glob("*.log")) if home.logs.is_dir() else []
        raise InputError(f"no log named {name!r}", f"known: {', '.join(known)}" if known else "nothing has run yet")
    for line in tail(path, lines):
        print(line)
    if not follow:
        return
    with open(path, "rb") as f:
        f.seek(0, 2)
        try:
            while True:
                chunk = f.read()
                if chunk:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.3)
        except (KeyboardInterrupt, Interrupted) as exc:  # Ctrl-C ends the follow: that is how it is stopped
            if isinstance(exc, Terminated):
                raise
            return
