"""The real stack users run: `memoria up -d` starts real `vllm serve` (CPU build) workers for all four kinds
and the real LiteLLM proxy, on tiny models built on the spot; the OpenAI SDK talks to it; `down` cleans up."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import openai
import psutil
import pytest
from PIL import Image

from memoria_cli.processes import marked
from memoria_cli.runtimes import Runtimes
from tests.conftest import DEFAULT_RUNTIMES, ROOT, free_ports, run_memoria, write_profile

pytestmark = pytest.mark.slow
MODELS = Path(os.environ.get("MEMORIA_TEST_MODELS", ROOT / ".cache" / "tiny-models"))


def build_tiny_models() -> Path:
    py = Runtimes(DEFAULT_RUNTIMES).python_of(Runtimes(DEFAULT_RUNTIMES).vllm)
    if not py.exists():
        pytest.fail(f"vLLM runtime missing at {py}: run `memoria setup`")
    builder = ROOT / "memoria_cli" / "builders" / "tiny_models.py"
    subprocess.run([str(py), str(builder), str(MODELS)], check=True, timeout=900, capture_output=True)
    return MODELS


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    models = build_tiny_models()
    tmp = tmp_path_factory.mktemp("e2e")
    base = free_ports(5)
    profile = write_profile(tmp / "tiny.yaml", [
        {"name": "tiny-embed", "model": str(models / "tiny-embed"), "kind": "embedding",
         "aliases": ["test/Tiny-Embed"]},
        {"name": "tiny-chat", "model": str(models / "tiny-chat"), "kind": "chat", "aliases": ["test/Tiny-Chat"],
         "reasoning_parser": "qwen3",
         "extra_args": ["--structured-outputs-config", '{"backend":"xgrammar","disable_any_whitespace":true}']},
        {"name": "tiny-vl", "model": str(models / "tiny-vl"), "kind": "vision", "aliases": ["test/Tiny-VL"],
         "context": 1024, "note": "random weights: plumbing only"},
        {"name": "tiny-whisper", "model": str(models / "tiny-whisper"), "kind": "transcription",
         "aliases": ["test/Tiny-Whisper"]},
    ], port_base=base, startup_timeout=600)
    env = {"MEMORIA_HOME": str(tmp / "home"), "MEMORIA_RUNTIMES": str(DEFAULT_RUNTIMES)}
    old = {k: os.environ.get(k) for k in [*env, "LITELLM_MASTER_KEY"]}
    os.environ.update(env)
    os.environ.pop("LITELLM_MASTER_KEY", None)
    t0 = time.monotonic()
    r = run_memoria("up", "-d", "-p", str(profile), timeout=900)
    print(f"\nmemoria up -d: {time.monotonic() - t0:.1f} s to all ready")
    try:
        assert r.returncode == 0, r.stderr[-4000:]
        yield {"url": f"http://127.0.0.1:{base - 1}/v1", "home": tmp / "home", "profile": profile, "base": base}
    finally:
        run_memoria("down", timeout=180)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=stack["url"], api_key="not-needed", max_retries=0, timeout=120)


def test_models_list_public_names_and_aliases(client):
    ids = {m.id for m in client.models.list().data}
    assert ids >= {"tiny-embed", "tiny-chat", "tiny-vl", "tiny-whisper", "test/Tiny-Embed", "test/Tiny-Chat",
                   "test/Tiny-VL", "test/Tiny-Whisper"}


def test_embeddings_single_and_batch(client):
    one = client.embeddings.create(model="tiny-embed", input="Hello, world!")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 64 and one.usage.total_tokens > 0
    batch = client.embeddings.create(model="test/Tiny-Embed", input=["a fox", "solar panels", "wind"])
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert batch.data[0].embedding != batch.data[1].embedding


def test_chat_plain_and_streamed_with_reasoning(client):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model="tiny-chat", messages=msgs, max_tokens=16)
    m = r.choices[0].message
    assert m.content.strip() == "Hello world"
    assert m.reasoning_content.strip() == "hmm"
    reasoning, content = [], []
    for chunk in client.chat.completions.create(model="test/Tiny-Chat", messages=msgs, max_tokens=16, stream=True):
        if chunk.choices:
            d = chunk.choices[0].delta
            reasoning.append(getattr(d, "reasoning_content", None) or "")
            content.append(d.content or "")
    assert "".join(content).strip() == "Hello world" and "".join(reasoning).strip() == "hmm"


def test_legacy_completions(client):
    r = client.completions.create(model="tiny-chat", prompt="Once upon a time", max_tokens=5)
    assert r.choices[0].text and r.usage.completion_tokens > 0
    text = "".join(c.choices[0].text or "" for c in client.completions.create(
        model="tiny-chat", prompt="Once upon a time", max_tokens=5, stream=True) if c.choices)
    assert text


def test_ocr_style_chat_with_base64_image(client):
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype("uint8")).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = client.chat.completions.create(model="tiny-vl", max_tokens=8, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Extract all text from this image."},
        {"type": "image_url", "image_url": {"url": url}}]}])
    assert r.choices[0].message.content is not None
    assert r.usage.prompt_tokens > 10  # the image's tokens reached the model


def test_transcription(client):
    sr = 16000
    t = np.arange(2 * sr) / sr
    pcm = (0.2 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    r = client.audio.transcriptions.create(model="tiny-whisper", file=("speech.wav", buf.getvalue(), "audio/wav"),
                                           language="en")
    assert isinstance(r.text, str)


def test_status_shows_every_worker_ready_with_vllms_report(stack):
    r = run_memoria("status", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert {n: p["state"] for n, p in s["processes"].items()} == {
        "tiny-embed": "ready", "tiny-chat": "ready", "tiny-vl": "ready", "tiny-whisper": "ready", "proxy": "ready"}
    assert s["processes"]["tiny-chat"]["reported"]["kv_tokens"] > 0
    table = run_memoria("status").stdout
    assert "random weights: plumbing only" in table


def test_zz_down_leaves_nothing(stack):
    s = json.loads(run_memoria("status", "--json").stdout)
    marker = s["marker"]
    groups = [p["pid"] for p in s["processes"].values()]
    r = run_memoria("down", timeout=180)
    assert r.returncode == 0, r.stderr
    assert marked(marker) == []
    for pgid in groups:
        # zombies hold no memory and no port; they wait for an init that reaps (not every container has one)
        assert not [p for p in psutil.process_iter() if _pgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE]
    for p in s["processes"].values():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", p["port"]))


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
