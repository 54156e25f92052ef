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


def wav_bytes(seconds: float = 1.5, rate: int = 16000, freq: float = 440.0) -> bytes:
    """A mono 16-bit WAV tone: audio the transcription workers accept (content does not matter to them)."""
    import io
    import wave

    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((0.2 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def wait_for(pred, timeout: float = 30.0, step: float = 0.2):
    """Poll `pred` until it returns something true (which is returned), or fail after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def sox_converted(wav: Path, ext: str) -> Path:
    """`wav` converted by sox to another container (FLAC, OGG, AIFF ...), for the audio format tests."""
    import shutil

    if not shutil.which("sox"):
        pytest.fail("sox is needed to make test audio (scripts/test.sh installs it)")
    out = wav.with_suffix(f".{ext}")
    subprocess.run(["sox", str(wav), str(out)], check=True)
    return out


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
        """Two stand-in workers, alpha and beta, with these environments; `extra` goes into the profile."""
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


TINY_MODELS = Path(os.environ.get("MEMORIA_TEST_MODELS", ROOT / ".cache" / "tiny-models"))


def build_tiny_models() -> Path:
    from memoria_cli.runtimes import Runtimes

    py = Runtimes(DEFAULT_RUNTIMES).python_of(Runtimes(DEFAULT_RUNTIMES).vllm)
    if not py.exists():
        pytest.fail(f"vLLM runtime missing at {py}: run `memoria setup`")
    builder = ROOT / "memoria_cli" / "builders" / "tiny_models.py"
    subprocess.run([str(py), str(builder), str(TINY_MODELS)], check=True, timeout=900, capture_output=True)
    return TINY_MODELS


def tiny_models_profile(path: Path, models: Path, port_base: int) -> Path:
    return write_profile(path, [
        {"name": "tiny-embed", "model": str(models / "tiny-embed"), "kind": "embedding",
         "aliases": ["test/Tiny-Embed"]},
        {"name": "tiny-chat", "model": str(models / "tiny-chat"), "kind": "chat", "aliases": ["test/Tiny-Chat"],
         "reasoning_parser": "qwen3",
         "extra_args": ["--structured-outputs-config", '{"backend":"xgrammar","disable_any_whitespace":true}']},
        {"name": "tiny-vl", "model": str(models / "tiny-vl"), "kind": "vision", "aliases": ["test/Tiny-VL"],
         "context": 1024, "note": "random weights: plumbing only"},
        {"name": "tiny-whisper", "model": str(models / "tiny-whisper"), "kind": "transcription",
         "aliases": ["test/Tiny-Whisper"]},
    ], port_base=port_base, startup_timeout=600)


@pytest.fixture(scope="session")
def tiny_stack(tmp_path_factory):
    """The real stack (`vllm serve` CPU build x4 + LiteLLM) on tiny models, shared by the slow tests, in its own
    home; MEMORIA_HOME points at it while tests run. Torn down at the end, checked to leave nothing behind."""
    import json
    import time

    from memoria_cli.processes import marked

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
        yield {"url": f"http://127.0.0.1:{base - 1}/v1", "home": tmp / "home", "profile": profile, "base": base,
               "env": env, "state": state}
    finally:
        os.environ.update(env)
        down = run_memoria("down", timeout=180)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert down.returncode == 0, down.stderr
        if marker:
            assert marked(marker) == [], "memoria down left processes behind"
