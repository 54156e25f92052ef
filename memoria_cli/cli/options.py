"""Options shared by several commands, defined once."""

from __future__ import annotations

import typer

from memoria_cli.cli import completion

PROFILE = typer.Option(
    "default",
    "--profile",
    "-p",
    help="Profile name (see `memoria profiles`) or a .yaml path.",
    autocompletion=completion.profiles,
)
JSON = typer.Option(False, "--json", help="Machine-readable output on stdout.")
AS_HOST = typer.Option(
    None,
    "--as",
    help="In a cluster profile (one with `hosts:`): the host this is; it runs only the models placed on it.",
)
GPUS = typer.Option(
    None,
    "--gpus",
    "-g",
    help="Plan for a described machine: 24GiB, 2x80GiB, L4, 2xH100, 48GiB@8.9, cpu, or a JSON file. "
    "Default: this machine.",
)
