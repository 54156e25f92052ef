"""File writes that never leave half a file behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from memoria_cli.core.home import Home


def write_atomic(path: Path, text: str, private: bool = True) -> None:
    """tmp + fsync + rename: a reader sees the old file or the new one, never half of one. `private`: 0600
    (the home's state and config); else as the umask says (a user's own outputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mode = 0o600 if private else 0o666  # the umask narrows either
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def plugin_text(name: str) -> str:
    """The source of one of memoria_cli/plugins/ (copied to a host's home, or put in a Kubernetes ConfigMap)."""
    return (PLUGINS / name).read_text(encoding="utf-8")


def copy_plugin(name: str, dest: Path) -> None:
    """One of memoria_cli/plugins/, copied where another program's Python loads it (LiteLLM's plug-ins beside
    its config, vLLM's start-up hook). Plugins import nothing of memoria's, so the copy runs on its own."""
    write_atomic(dest, plugin_text(name))


def ensure_home(home: Home) -> None:
    """The home's folders, private to their owner: logs hold prompts and answers."""
    from memoria_cli.core.errors import InputError

    for d in (home.root, home.logs, home.cache):
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            if d.stat().st_mode & 0o077:
                d.chmod(0o700)
        except FileExistsError:
            raise InputError(
                f"the memoria home needs a folder at {d}, and a file is there",
                "move the file, or point MEMORIA_HOME elsewhere",
            ) from None
        except PermissionError:
            raise InputError(
                f"cannot write the memoria home at {d}: permission denied",
                "point MEMORIA_HOME at a folder you can write",
            ) from None


def open_log(path: Path) -> BinaryIO:
    """A log opened for appending, private to its owner (logs hold prompts and answers), its folder made."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
