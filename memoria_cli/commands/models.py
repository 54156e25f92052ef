"""`memoria models`: what the endpoint serves, with kind, aliases and readiness from the running stack."""

from __future__ import annotations

import json
from typing import Any

import typer

from memoria_cli.cli.client_options import API_KEY, BASE_URL, TIMEOUT
from memoria_cli.cli.options import JSON


def register(app: typer.Typer) -> None:
    app.command(name="models")(models_cmd)


def models_cmd(
    as_json: bool = JSON, base_url: str = BASE_URL, api_key: str = API_KEY, timeout: float = TIMEOUT
) -> None:
    """List the served models (public names and aliases), their kind and whether they are ready.

    Example: `memoria models --json`.
    """
    from memoria_cli.client.api import Api, resolve_endpoint, running_state

    state = running_state()
    api = Api(resolve_endpoint(base_url, api_key, state=state), timeout=timeout)
    served = api.models()
    rows: list[dict[str, Any]] = []
    for name, p in (state.workers() if state else {}).items():
        if name in served:
            rows.append(
                {"name": name, "kind": p.kind, "aliases": p.aliases, "ready": p.state == "ready", "model": p.model}
            )
    known = {n for r in rows for n in [r["name"], *r["aliases"]]}
    rows += [{"name": n, "kind": None, "aliases": [], "ready": True, "model": None} for n in served if n not in known]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from memoria_cli.cli.console import out

    t = Table(title=f"models at {api.endpoint.base_url}", title_justify="left")
    for col in ("name", "kind", "aliases", "ready"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["kind"] or "-", ", ".join(r["aliases"]) or "-", "yes" if r["ready"] else "[red]no[/]")
    out().print(t)
