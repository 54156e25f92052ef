"""docs/architecture.md's import rules, checked on the source: the layers point one way only."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "memoria_cli"
FORBIDDEN = {  # a layer -> the layers it must not import
    "core": ("run", "client", "cli", "commands"),
    "run": ("client", "cli", "commands"),
    "client": ("cli", "commands"),
    "export": ("run", "client", "cli", "commands"),  # pure: the plan in, objects out
    "plugins": ("core", "run", "client", "cli", "commands"),
}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_each_layer_imports_only_what_it_may():
    broken = []
    for layer, banned in FORBIDDEN.items():
        files = sorted((PKG / layer).rglob("*.py"))
        assert files, layer
        for f in files:
            for mod in imports_of(f):
                if any(mod == f"memoria_cli.{b}" or mod.startswith(f"memoria_cli.{b}.") for b in banned):
                    broken.append(f"{f.relative_to(PKG)} imports {mod}")
    assert broken == []


def test_plugins_import_no_memoria_at_all():
    for f in sorted((PKG / "plugins").rglob("*.py")):
        assert not any(m == "memoria_cli" or m.startswith("memoria_cli.") for m in imports_of(f)), f


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from memoria_cli.run.state import read_state\n")
    assert "memoria_cli.run.state" in imports_of(bad)  # imports inside functions count too
