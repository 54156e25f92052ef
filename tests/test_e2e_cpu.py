"""The real stack users run: `memoria up -d` starts real `vllm serve` (CPU build) workers for all four kinds
and the real LiteLLM proxy, on tiny models built on the spot; the OpenAI SDK talks to it; `down` cleans up."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import openai
import pytest
from PIL import Image

from tests.helpers import run_memoria, wav_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tiny_stack):
    return openai.OpenAI(base_url=tiny_stack["url"], api_key="not-needed", max_retries=0, timeout=120)


def test_models_list_public_names_and_aliases(client):
    ids = {m.id for m in client.models.list().data}
    assert ids >= {
        "tiny-embed",
        "tiny-chat",
        "tiny-vl",
        "tiny-whisper",
        "test/Tiny-Embed",
        "test/Tiny-Chat",
        "test/Tiny-VL",
        "test/Tiny-Whisper",
    }


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
    text = "".join(
        c.choices[0].text or ""
        for c in client.completions.create(model="tiny-chat", prompt="Once upon a time", max_tokens=5, stream=True)
        if c.choices
    )
    assert text


def test_ocr_style_chat_with_base64_image(client):
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype("uint8")).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = client.chat.completions.create(
        model="tiny-vl",
        max_tokens=8,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Extract all text from this image."},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content is not None
    assert r.usage.prompt_tokens > 10  # the image's tokens reached the model


def test_transcription(client):
    r = client.audio.transcriptions.create(
        model="tiny-whisper", file=("speech.wav", wav_bytes(2.0), "audio/wav"), language="en"
    )
    assert isinstance(r.text, str)


def test_status_shows_every_worker_ready_with_vllms_report(tiny_stack):
    r = run_memoria("status", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert {n: p["state"] for n, p in s["processes"].items()} == {
        "tiny-embed": "ready",
        "tiny-chat": "ready",
        "tiny-vl": "ready",
        "tiny-whisper": "ready",
        "proxy": "ready",
    }
    plan = {w["name"]: w for w in s["plan"]["workers"]}
    for name in ("tiny-embed", "tiny-chat", "tiny-vl", "tiny-whisper"):
        rep = s["processes"][name]["reported"]
        # the CPU engine's "Explicitly set (X/Y) GiB for KV cache": the planned bytes, to vLLM's 0.01 GiB
        assert abs(rep["kv_memory"] - plan[name]["kv_bytes"]) <= 0.006 * 2**30, (name, rep)
        assert rep["kv_tokens"] > 0 and rep["context"] == plan[name]["context"], (name, rep)
        assert s["processes"][name]["memory_used"] > 100 * 2**20  # resident memory of its process tree
    assert s["warnings"] == []
    table = run_memoria("status").stdout
    assert "random weights: plumbing only" in table
    assert f"{s['processes']['tiny-chat']['reported']['kv_tokens']} tok" in table  # KV actual is not blank


def test_cpu_workers_sleep_between_steps_instead_of_spinning(client, tiny_stack):
    """vllm_hooks.py at work in real workers. For a second after each step, vLLM's processes wait for the next
    message by spinning on sched_yield; memoria's pause turns the wait into sleeps. Witness: the CPU the embedding
    worker's processes use in the 0.8 s after a request: 0.80 s with the pause off (`MEMORIA_SPIN_PAUSE_US: "0"`
    in the profile), 0.09-0.12 s with it."""
    import time

    from memoria_cli.core.worker_spec import MARKER_ENV
    from memoria_cli.plugins.vllm_hooks import PAUSE_ENV
    from memoria_cli.run.processes import marked

    [api] = [
        p
        for p in marked(tiny_stack["state"]["marker"])
        if p.environ()[MARKER_ENV].endswith("/tiny-embed") and p.name() == "vllm"
    ]
    assert api.environ().get(PAUSE_ENV) == "100"
    procs = [api, *api.children(recursive=True)]  # their /proc environ is overwritten by setproctitle
    assert {"VLLM::EngineCore", "VLLM::Worker"} <= {p.name() for p in procs}

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    used = []
    for _ in range(3):
        client.embeddings.create(model="tiny-embed", input="a sentence about the sea")
        before = cpu()
        time.sleep(0.8)
        used.append(cpu() - before)
    assert min(used) < 0.4, used
