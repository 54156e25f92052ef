"""Shared fixtures: an isolated memoria home per test, the CLI as a subprocess, the stand-in runtimes. The
plain helpers are in tests/helpers.py (bench/ uses them too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import (
    DEFAULT_RUNTIMES,
    TOOLS,
    build_tiny_models,
    free_ports,
    run_memoria,
    tiny_models_profile,
    write_profile,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh MEMORIA_HOME; whatever a test leaves running there is stopped afterwards."""
    h = tmp_path / "home"
    monkeypatch.setenv("MEMORIA_HOME", str(h))
    monkeypatch.setenv("MEMORIA_RUNTIMES", str(DEFAULT_RUNTIMES))
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    yield h
    if (h / "state.json").exists():
        subprocess.run(
            [sys.executable, "-m", "memoria_cli", "down", "--timeout", "30"],
            capture_output=True,
            env={**os.environ, "MEMORIA_HOME": str(h)},
            timeout=120,
        )


@pytest.fixture
def memoria():
    return run_memoria


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """MEMORIA_VLLM and MEMORIA_LITELLM pointing at the stand-in process."""
    exe = tmp_path / "standin"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} {TOOLS / "standin.py"} "$@"\n')
    exe.chmod(0o755)
    monkeypatch.setenv("MEMORIA_VLLM", str(exe))
    monkeypatch.setenv("MEMORIA_LITELLM", str(exe))
    return exe


@pytest.fixture
def standin_profile(tmp_path, standin):
    """Two stand-in workers (a folder each, with a config.json so the planner can size them)."""

    def make(env_a: dict | None = None, env_b: dict | None = None, **extra) -> Path:
        """Two stand-in workers, alpha and beta, with these environments; `extra` goes into the profile."""
        models = []
        for name, env in (("alpha", env_a), ("beta", env_b)):
            folder = tmp_path / "models" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(
                '{"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 64, "max_position_embeddings": 512}'
            )
            (folder / "model.safetensors").write_bytes(b"\0" * 1024)
            models.append({"name": name, "model": str(folder), "kind": "chat", "env": env or {}})
        return write_profile(tmp_path / "standin.yaml", models, **extra)

    return make


EXTERNAL_STACK = "MEMORIA_TEST_STACK"  # JSON {"url": ..., "key": ...}: tests/contract/ run against that stack


@pytest.fixture(scope="session")
def tiny_stack(tmp_path_factory):
    """The real stack (`vllm serve` CPU build x4 + LiteLLM) on tiny models, shared by the slow tests, in its own
    home; MEMORIA_HOME points at it while tests run. Torn down at the end, checked to leave nothing behind."""
    import json
    import time

    from memoria_cli.run.processes import marked

    if os.environ.get(EXTERNAL_STACK):  # a stack another test started (tests/test_cluster_netns.py): used as is
        yield json.loads(os.environ[EXTERNAL_STACK])
        return
    models = build_tiny_models()
    tmp = tmp_path_factory.mktemp("tiny-stack")
    base = free_ports(5)
    profile = tiny_models_profile(tmp / "tiny.yaml", models, base)
    env = {"MEMORIA_HOME": str(tmp / "home"), "MEMORIA_RUNTIMES": str(DEFAULT_RUNTIMES)}
    old = {k: os.environ.get(k) for k in [*env, "LITELLM_MASTER_KEY"]}
    os.environ.update(env)
    os.environ.pop("LITELLM_MASTER_KEY", None)
    t0 = time.monotonic()
    r = run_memoria("up", "-d", "-p", str(profile), timeout=900)
    print(f"\ntiny stack: memoria up -d took {time.monotonic() - t0:.1f} s to all ready")
    marker = None
    try:
        assert r.returncode == 0, r.stderr[-4000:]
        state = json.loads(run_memoria("status", "--json").stdout)
        marker = state["marker"]
        stack = {
            "url": f"http://127.0.0.1:{base - 1}/v1",
            "home": tmp / "home",
            "profile": profile,
            "base": base,
            "env": env,
            "state": state,
            "downed": False,  # tests/test_down_real.py downs it last, and checks that
        }
        yield stack
    finally:
        os.environ.update(env)
        downed = marker is not None and stack["downed"]
        down = run_memoria("down", timeout=180) if not downed else None
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert down is None or down.returncode == 0, down.stderr
        if marker:
            assert marked(marker) == [], "memoria down left processes behind"


PROCESS_FIXTURES = {"standin", "standin_profile", "memoria", "tiny_stack"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start processes are `medium` unless marked `slow`: the fast tier (`-m "not medium and not
    slow"`) starts none. A module that starts processes without these fixtures marks itself."""
    for item in items:
        if item.get_closest_marker("slow") is None and PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.medium)
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiers are kept true: a test marked neither medium nor slow that starts a process fails, saying so."""
    if request.node.get_closest_marker("medium") or request.node.get_closest_marker("slow"):
        return

    def refuse(self: subprocess.Popen[bytes], *args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it medium (or slow)")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
