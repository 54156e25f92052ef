"""Helpers for tests and benches: the CLI as a subprocess, free ports, test profiles, tiny models, audio.
Plain functions, no pytest: bench/ imports them from an environment without pytest."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from memoria_cli.core.home import Home

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
        raise AssertionError("sox is needed to make test audio (scripts/test.sh installs it)")
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


def run_memoria(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "memoria_cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"memoria {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_profile(path: Path, models: list[dict], port_base: int | None = None, **extra) -> Path:
    base = port_base or free_ports(len(models) + 1)
    data = {
        "description": "test profile",
        "proxy": {"host": "127.0.0.1", "port": base - 1},
        "worker_port_base": base,
        "models": models,
        **extra,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


TINY_MODELS = Path(os.environ.get("MEMORIA_TEST_MODELS", ROOT / ".cache" / "tiny-models"))


def host_env(root: Path, host: str, key: str) -> dict[str, str]:
    """A cluster host's environment in a test: its own home under `root`, the shared runtimes, the cluster key."""
    return {"MEMORIA_HOME": str(root / host), "MEMORIA_RUNTIMES": str(DEFAULT_RUNTIMES), "LITELLM_MASTER_KEY": key}


def build_tiny_models() -> Path:
    from memoria_cli.run.runtimes import Runtimes

    py = Runtimes(DEFAULT_RUNTIMES).python_of(Runtimes(DEFAULT_RUNTIMES).vllm)
    if not py.exists():
        raise AssertionError(f"vLLM runtime missing at {py}: run `memoria setup`")
    builder = ROOT / "memoria_cli" / "plugins" / "builders" / "tiny_models.py"
    subprocess.run([str(py), str(builder), str(TINY_MODELS)], check=True, timeout=900, capture_output=True)
    return TINY_MODELS


def tiny_models_profile(path: Path, models: Path, port_base: int) -> Path:
    return write_profile(
        path,
        [
            {
                "name": "tiny-embed",
                "model": str(models / "tiny-embed"),
                "kind": "embedding",
                "aliases": ["test/Tiny-Embed"],
            },
            {
                "name": "tiny-chat",
                "model": str(models / "tiny-chat"),
                "kind": "chat",
                "aliases": ["test/Tiny-Chat"],
                "reasoning_parser": "qwen3",
                "extra_args": ["--structured-outputs-config", '{"backend":"xgrammar","disable_any_whitespace":true}'],
            },
            {
                "name": "tiny-vl",
                "model": str(models / "tiny-vl"),
                "kind": "vision",
                "aliases": ["test/Tiny-VL"],
                "context": 1024,
                "note": "random weights: plumbing only",
            },
            {
                "name": "tiny-whisper",
                "model": str(models / "tiny-whisper"),
                "kind": "transcription",
                "aliases": ["test/Tiny-Whisper"],
            },
        ],
        port_base=port_base,
        startup_timeout=600,
    )


def run_state(
    url: str = "http://127.0.0.1:8200/v1",
    processes: dict[str, dict[str, Any]] | None = None,
    phase: str = "running",
    engine: str = "cpu",
    supervisor: tuple[int, float] = (1, 0.0),
) -> Any:
    """A RunState as the supervisor writes it, for tests of its readers (`processes`: name -> record fields)."""
    from memoria_cli.core.plan import Plan
    from memoria_cli.run.state import ProcessRecord, RunState, SupervisorRecord

    procs = {n: ProcessRecord(**{"state": "ready", "port": 1, **p}) for n, p in (processes or {}).items()}
    return RunState(
        phase=phase,
        supervisor=SupervisorRecord(*supervisor, 0.0),  # type: ignore[arg-type]
        plan=Plan(engine, (), (), "127.0.0.1", 8200),
        processes=procs,
        url=url,
        engine=engine,
    )


def worker_plan(**fields: Any) -> Any:
    """A chat WorkerPlan with these fields (the rest are placeholders), for tests of what reads plans."""
    from memoria_cli.core.plan import WorkerPlan

    base: dict[str, Any] = {
        "name": "chat",
        "kind": "chat",
        "model": "m",
        "devices": (),
        "tensor_parallel": 1,
        "dtype": None,
        "weights": 0,
        "fixed": 0,
        "kv_bytes": 0,
        "kv_per_token": 1,
        "context": 1,
        "max_num_seqs": 1,
        "gmu": None,
        "port": 1,
    }
    return WorkerPlan(**{**base, **fields})


def litellm_validate(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """LiteLLM's own config loader on `config` (`litellm --config F --validate_config`, in its runtime), with
    the proxy's offline settings and a master key; its verdict is in stdout + stderr."""
    from memoria_cli.run.runtimes import Runtimes

    exe = Runtimes(DEFAULT_RUNTIMES).litellm.with_name("litellm")
    if not exe.exists():
        raise AssertionError(f"LiteLLM runtime missing at {exe}: run `memoria setup`")
    full = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_MASTER_KEY": "sk-test-key-abcdef",
        "LITELLM_MODE": "PRODUCTION",
        **(env or {}),
    }
    return subprocess.run(
        [str(exe), "--config", str(config), "--validate_config"],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
        cwd=config.parent,
    )
