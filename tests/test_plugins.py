"""The files memoria copies into LiteLLM's and vLLM's interpreters stand alone: everything in
memoria_cli/plugins/ imports nothing of memoria (docs/architecture.md's rule), and memoria's client never
loads the LiteLLM plug-in."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from memoria_cli.run.stack import PROXY_PLUGINS, VLLM_SITE

PLUGINS = Path(__file__).resolve().parent.parent / "memoria_cli" / "plugins"
COPIED = sorted(p.relative_to(PLUGINS) for p in PLUGINS.rglob("*.py"))


def test_what_is_copied_is_a_plugin():
    pages = {str(p.relative_to(PLUGINS)) for p in PLUGINS.glob("*.html")}
    assert pages == {"status_page.html"}
    assert {*PROXY_PLUGINS.values(), *VLLM_SITE.values()} <= {str(p) for p in COPIED} | pages


def test_plugins_import_nothing_of_memoria():
    assert len(COPIED) >= 8, COPIED  # the four plug-ins, the launcher, the builders
    for name in COPIED:
        tree = ast.parse((PLUGINS / name).read_text())
        for node in ast.walk(tree):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not any(m.startswith("memoria_cli") for m in mods), (name, mods)


@pytest.mark.medium
def test_the_client_renders_transcripts_with_litellm_importable(tmp_path):
    """A LiteLLM whose proxy server fails on import: the client must not touch it (it used to crash)."""
    fake = tmp_path / "litellm"
    (fake / "integrations").mkdir(parents=True)
    (fake / "proxy").mkdir()
    for d in (fake, fake / "integrations", fake / "proxy"):
        (d / "__init__.py").write_text("")
    (fake / "integrations" / "custom_logger.py").write_text("class CustomLogger: pass\n")
    (fake / "proxy" / "proxy_server.py").write_text("raise RuntimeError('the proxy server was imported')\n")
    code = (
        "import sys, memoria_cli.commands.transcribe, memoria_cli.client.audio\n"
        "from memoria_cli.plugins.transcripts import render\n"
        "import litellm.integrations.custom_logger\n"
        "print(render('srt', {'text': 'hello'}, 1.5), end='')\n"
        "assert 'memoria_cli.plugins.litellm_hooks' not in sys.modules\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{tmp_path}:{PLUGINS.parents[1]}", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1\n00:00:00,000 --> 00:00:01,500\nhello\n\n"
