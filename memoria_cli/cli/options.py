"""Options shared by several commands, defined once."""

from __future__ import annotations

import typer

PROFILE = typer.Option("default", "--profile", "-p", help="Profile name (see `memoria profiles`) or a .yaml path.")
JSON = typer.Option(False, "--json", help="Machine-readable output on stdout.")
