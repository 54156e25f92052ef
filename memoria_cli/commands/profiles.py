"""`memoria profiles`: the profiles memoria knows, each validated."""

from __future__ import annotations

import json
from typing import Any

import typer

from memoria_cli.cli.options import JSON


def register(app: typer.Typer) -> None:
    app.command(name="profiles")(profiles_cmd)


def profiles_cmd(as_json: bool = JSON) -> None:
    """List and validate every known profile (shipped ones and those under $MEMORIA_PROFILES).

    Exit code 3 if any is invalid. Example: `memoria profiles`.
    """
    from memoria_cli.core.errors import InputError, MemoriaError
    from memoria_cli.core.profile import load_profile, shipped_profiles

    rows: list[dict[str, Any]] = []
    for path in shipped_profiles():
        try:
            p = load_profile(str(path))
            rows.append(
                {
                    "name": p.name,
                    "path": str(path),
                    "valid": True,
                    "description": p.description,
                    "models": [{"name": m.name, "kind": m.kind, "model": m.model} for m in p.models],
                }
            )
        except MemoriaError as exc:
            rows.append({"name": path.stem, "path": str(path), "valid": False, "error": exc.line()})
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        from rich.table import Table

        from memoria_cli.cli.console import out

        t = Table(title="memoria profiles", title_justify="left")
        for col in ("name", "models", "description"):
            t.add_column(col)
        for r in rows:
            if r["valid"]:
                t.add_row(r["name"], ", ".join(f"{m['name']} ({m['kind']})" for m in r["models"]), r["description"])
            else:
                t.add_row(r["name"], f"[red]invalid[/]: {r['error']}", "")
        out().print(t)
    bad = [r["name"] for r in rows if not r["valid"]]
    if bad:
        raise InputError(f"invalid profile(s): {', '.join(bad)}", "fix them; the table says what is wrong")
