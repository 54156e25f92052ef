"""`memoria completion SHELL`: the script that gives bash, zsh or fish Tab completion for memoria."""

from __future__ import annotations

import typer

HELP = """Print the completion script for SHELL (bash, zsh or fish).

Commands and options complete, and so do profile names, the running stack's workers (`restart`, `logs`)
and its model names (`--model`).

\b
  bash:  memoria completion bash > ~/.local/share/bash-completion/completions/memoria
  zsh:   memoria completion zsh > "${fpath[1]}/_memoria"   (or: eval "$(memoria completion zsh)" in ~/.zshrc)
  fish:  memoria completion fish > ~/.config/fish/completions/memoria.fish

Example: `eval "$(memoria completion bash)"`, then `memoria restart <Tab>`.
"""


def register(app: typer.Typer) -> None:
    app.command(name="completion", help=HELP)(completion_cmd)


def completion_cmd(shell: str = typer.Argument(..., help="bash, zsh or fish.")) -> None:
    from memoria_cli.cli.completion import SHELLS, script
    from memoria_cli.core.errors import InputError

    if shell not in SHELLS:
        raise InputError(f"no completion for shell {shell!r}", f"give one of: {', '.join(SHELLS)}")
    print(script(shell))
