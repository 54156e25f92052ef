"""Shared fixtures: an isolated memoria home per test, the CLI as a subprocess, the stand-in runtimes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from memoria_cli.home import Home

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent / "tools"
DEFAULT_RUNTIMES = Home.from_env().runtimes  # the runtimes `memoria setup` installed, shared by every test home


def free_ports(n: int) -> int:
    """A base port with `n` consecutive free ports above it (and the one below for a proxy)."""
    for base in range(21000, 40000, 97):
        ok = True
        for p in range(base - 1, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh MEMORIA_HOME; whatever a test leaves running there is stopped afterwards."""
    h = tmp_path / "home"
    monkeypatch.setenv("MEMORIA_HOME", str(h))
    monkeypatch.setenv("MEMORIA_RUNTIMES", str(DEFAULT_RUNTIMES))
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    yield h
    if (h / "state.json").exists():
        subprocess.run([sys.executable, "-m", "memoria_cli", "down", "--timeout", "30"], capture_output=True,
                       env={**os.environ, "MEMORIA_HOME": str(h)}, timeout=120)


def run_memoria(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
                check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "memoria_cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"memoria {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def memoria():
    return run_memoria


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """MEMORIA_VLLM and MEMORIA_LITELLM pointing at the stand-in process."""
    exe = tmp_path / "standin"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {TOOLS / 'standin.py'} \"$@\"\n")
    exe.chmod(0o755)
    monkeypatch.setenv("MEMORIA_VLLM", str(exe))
    monkeypatch.setenv("MEMORIA_LITELLM", str(exe))
    return exe


def write_profile(path: Path, models: list[dict], port_base: int | None = None, **extra) -> Path:
    base = port_base or free_ports(len(models) + 1)
    data = {"description": "test profile", "proxy": {"host": "127.0.0.1", "port": base - 1},
            "worker_port_base": base, "models": models, **extra}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def standin_profile(tmp_path, standin):
    """Two stand-in workers (a folder each, with a config.json so the planner can size them)."""
    def make(env_a: dict | None = None, env_b: dict | None = None, **extra) -> Path:
        models = []
        for name, env in (("alpha", env_a), ("beta", env_b)):
            folder = tmp_path / "models" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text('{"num_hidden_layers": 2, "num_attention_heads": 2, '
                                                '"hidden_size": 64, "max_position_embeddings": 512}')
            (folder / "model.safetensors").write_bytes(b"\0" * 1024)
            models.append({"name": name, "model": str(folder), "kind": "chat", "env": env or {}})
        return write_profile(tmp_path / "standin.yaml", models, **extra)
    return make
