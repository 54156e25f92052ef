"""The API guide's promises (shared/seed/API_USAGE.md), held through memoria's proxy on :8200-style endpoint.

Same calls and parameters as the guide, with its model names mapped to the test profile's tiny models
(the chat one always thinks " hmm" and answers " Hello world", so reasoning and content can be asserted).
"""

from __future__ import annotations

import asyncio
import io
import json
import re

import numpy as np
import pytest
from openai import APIConnectionError, APIError, AsyncOpenAI, OpenAI
from pydantic import BaseModel

from tests.helpers import wav_bytes

pytestmark = pytest.mark.slow
EMBED, CHAT, OCR, WHISPER = "tiny-embed", "tiny-chat", "tiny-vl", "tiny-whisper"
SPEECH = wav_bytes(2.0, freq=300)  # 2 s of audio: SRT/VTT cues must end at 2.000


def key(stack: dict) -> str:
    """The stack's key: none for the local tiny stack (any key passes), the cluster's when run through an entry."""
    return stack.get("key") or "not-needed"


def auth(stack: dict, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key(stack)}", **headers}


def no_key_mode(stack: dict) -> None:
    if stack.get("key"):
        pytest.skip("about the no-key mode; this stack has a key")


@pytest.fixture(scope="module")
def client(tiny_stack):
    return OpenAI(base_url=tiny_stack["url"], api_key=key(tiny_stack))


# ---------------------------------------------------------------------------------------- models


def test_models_list_names_and_hf_aliases(client):
    ids = {m.id for m in client.models.list().data}
    assert {EMBED, CHAT, OCR, WHISPER} <= ids
    assert {"test/Tiny-Embed", "test/Tiny-Chat", "test/Tiny-VL", "test/Tiny-Whisper"} <= ids


def test_any_key_is_accepted_by_default(tiny_stack):
    no_key_mode(tiny_stack)
    for key in ("not-needed", "sk-anything", "x"):
        c = OpenAI(base_url=tiny_stack["url"], api_key=key)
        assert c.embeddings.create(input="hi", model=EMBED).data


# ------------------------------------------------------------------------------------ embeddings


def test_single_and_batch_embeddings_with_usage(client):
    response = client.embeddings.create(input="Hello, world!", model=EMBED)
    assert response.object == "list" and response.data[0].object == "embedding"
    assert len(response.data[0].embedding) == 64 and response.usage.total_tokens > 0
    assert response.usage.prompt_tokens == response.usage.total_tokens
    texts = [
        "The quick brown fox jumps over the lazy dog",
        "Machine learning is transforming technology",
        "Python is a versatile programming language",
    ]
    response = client.embeddings.create(input=texts, model="test/Tiny-Embed")
    assert [d.index for d in response.data] == [0, 1, 2]


def test_rag_workflow(client):
    documents = [
        "Renewable energy reduces carbon emissions",
        "Solar panels convert sunlight to electricity",
        "Wind turbines generate clean power",
    ]
    doc_embeddings = [client.embeddings.create(input=d, model=EMBED).data[0].embedding for d in documents]
    query = "What are the benefits of renewable energy?"
    q = client.embeddings.create(input=query, model=EMBED).data[0].embedding
    sims = [np.dot(q, d) / (np.linalg.norm(q) * np.linalg.norm(d)) for d in doc_embeddings]
    context = documents[int(np.argmax(sims))]
    completion = client.chat.completions.create(
        model=CHAT, messages=[{"role": "system", "content": f"Context: {context}"}, {"role": "user", "content": query}]
    )
    assert completion.choices[0].message.content.strip() == "Hello world"


# ------------------------------------------------------------------------------------------ chat


def test_chat_response_format_with_reasoning_content(client):
    response = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "If x + 5 = 12, what is x?"}], max_tokens=500, temperature=0.7
    )
    assert response.object == "chat.completion" and response.model
    message = response.choices[0].message
    assert message.role == "assistant"
    assert hasattr(message, "reasoning_content") and message.reasoning_content.strip() == "hmm"
    assert message.content.strip() == "Hello world"
    assert response.choices[0].finish_reason == "stop"
    u = response.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_streaming_reasoning_content_in_deltas(client):
    stream = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Solve: 2x + 3 = 11"}], stream=True
    )
    reasoning_parts, content_parts = [], []
    for chunk in stream:
        delta = chunk.choices[0].delta
        if hasattr(delta, "reasoning_content") and delta.reasoning_content:
            reasoning_parts.append(delta.reasoning_content)
        if delta.content is not None:
            content_parts.append(delta.content)
    assert "".join(reasoning_parts).strip() == "hmm"
    assert "".join(content_parts).strip() == "Hello world"
    assert len(reasoning_parts) >= 1 and len(content_parts) >= 2  # really streamed, token by token


def test_multi_turn(client):
    messages = [
        {"role": "system", "content": "You are a helpful AI assistant."},
        {"role": "user", "content": "What is Python?"},
    ]
    response = client.chat.completions.create(model=CHAT, messages=messages)
    messages += [
        {"role": "assistant", "content": response.choices[0].message.content},
        {"role": "user", "content": "What are its main features?"},
    ]
    assert client.chat.completions.create(model=CHAT, messages=messages).choices[0].message.content


def test_advanced_parameters_are_accepted(client):
    response = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=1000,
        temperature=0.8,
        top_p=0.9,
        frequency_penalty=0.5,
        presence_penalty=0.3,
        stop=["\n\n", "END"],
    )
    assert response.choices[0].message.content is not None
    short = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    stopped = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], stop=[" world"])
    assert stopped.choices[0].message.content.strip() == "Hello"


class PersonInfo(BaseModel):
    name: str
    age: int
    occupation: str
    hobbies: list[str]


@pytest.mark.parametrize("strict", [None, True])
def test_structured_output_json_schema(client, strict):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "occupation": {"type": "string"},
            "interests": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "occupation", "interests"],
        "additionalProperties": False,
    }
    fmt: dict = {"name": "person_extraction", "schema": schema}
    if strict is not None:
        fmt["strict"] = strict
    response = client.chat.completions.create(
        model=CHAT,
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": fmt},
        messages=[
            {"role": "user", "content": "Extract information from: John Doe works as a teacher and loves reading"}
        ],
    )
    data = json.loads(response.choices[0].message.content)
    assert set(data) == {"name", "occupation", "interests"} and isinstance(data["interests"], list)


def test_structured_output_pydantic_schema(client):
    response = client.chat.completions.create(
        model=CHAT,
        max_tokens=300,
        messages=[{"role": "user", "content": "Tell me about a software engineer named Alice who is 28 years old"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person_info", "schema": PersonInfo.model_json_schema()},
        },
    )
    person = PersonInfo.model_validate_json(response.choices[0].message.content)
    assert isinstance(person.age, int)


def test_legacy_completions_plain_and_streamed(client):
    r = client.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=100)
    assert r.choices[0].text
    stream = client.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=100, stream=True)
    text = ""
    for chunk in stream:
        if chunk.choices[0].text:  # the guide's loop: a null text in the last chunk must not crash it
            text += chunk.choices[0].text
    assert text


def test_concurrent_requests_async(tiny_stack):
    async def process_batch():
        c = AsyncOpenAI(base_url=tiny_stack["url"], api_key=key(tiny_stack))
        tasks = [
            c.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": p}])
            for p in ("Question 1?", "Question 2?", "Question 3?")
        ]
        return await asyncio.gather(*tasks)

    responses = asyncio.run(process_batch())
    assert [r.choices[0].message.content.strip() for r in responses] == ["Hello world"] * 3


# ------------------------------------------------------------------------------------------- ocr


def test_ocr_chat_with_image_url(client):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype("uint8")).save(buf, "PNG")
    import base64

    b64 = base64.b64encode(buf.getvalue()).decode("utf-8")
    for prompt in ("Extract all text from this image.", "Convert this document to markdown format."):
        response = client.chat.completions.create(
            model=OCR,
            max_tokens=16,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
                    ],
                }
            ],
        )
        assert response.choices[0].message.content is not None


# --------------------------------------------------------------------------------- transcription


def test_transcription_json_default_and_language(client):
    r = client.audio.transcriptions.create(model=WHISPER, file=("speech.wav", SPEECH, "audio/wav"))
    assert isinstance(r.text, str)
    r = client.audio.transcriptions.create(
        model=WHISPER, file=("speech.wav", SPEECH, "audio/wav"), language="en", temperature=0.0, response_format="json"
    )
    assert isinstance(r.text, str)


def test_transcription_text_srt_vtt_are_what_openai_returns(client):
    audio = ("speech.wav", SPEECH, "audio/wav")
    text = client.audio.transcriptions.create(model=WHISPER, file=audio, language="en", response_format="text")
    assert isinstance(text, str) and not text.lstrip().startswith("{")
    srt = client.audio.transcriptions.create(model=WHISPER, file=audio, language="en", response_format="srt")
    assert re.fullmatch(r"1\n00:00:00,000 --> 00:00:02,000\n[^\n]*\n\n", srt), srt
    vtt = client.audio.transcriptions.create(model=WHISPER, file=audio, language="en", response_format="vtt")
    assert re.fullmatch(r"WEBVTT\n\n00:00:00\.000 --> 00:00:02\.000\n[^\n]*\n\n", vtt), vtt


def test_transcription_verbose_json(client):
    r = client.audio.transcriptions.create(
        model=WHISPER, file=("speech.wav", SPEECH, "audio/wav"), language="en", response_format="verbose_json"
    )
    assert isinstance(r.text, str) and r.language and r.duration == pytest.approx(2.0, abs=0.05)


# ---------------------------------------------------------------------------------------- errors


def test_unknown_model_is_a_clean_4xx(client):
    with pytest.raises(APIError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert getattr(e.value, "status_code", None) in (400, 404)
    assert "no-such-model" in str(e.value)


def test_connection_error_when_nothing_listens():
    c = OpenAI(base_url="http://127.0.0.1:9/v1", api_key="not-needed", max_retries=0)
    with pytest.raises(APIConnectionError):
        c.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Hello"}])


def test_timeout_configuration(tiny_stack):
    import httpx

    c = OpenAI(base_url=tiny_stack["url"], api_key=key(tiny_stack), timeout=httpx.Timeout(60.0, connect=10.0))
    assert c.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Hello"}]).choices


# ----------------------------------------------------------------------------- the proxy's fast path


@pytest.mark.parametrize("model", [CHAT, "test/Tiny-Chat"])
def test_fast_path_answers_chat_as_litellm_does(tiny_stack, model):
    """The tests above ran through the fast path; here the two paths, side by side, say the same."""
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    fast = httpx.post(tiny_stack["url"] + "/chat/completions", json=body, timeout=60, headers=auth(tiny_stack))
    slow = httpx.post(
        tiny_stack["url"] + "/chat/completions",
        json=body,
        timeout=60,
        headers=auth(tiny_stack, **{"x-memoria-route": "litellm"}),
    )
    assert fast.headers.get("x-memoria-route") == "fast" and "x-memoria-route" not in slow.headers
    a, b = (r.json()["choices"][0]["message"] for r in (fast, slow))
    assert (a["content"], a["reasoning_content"]) == (b["content"], b["reasoning_content"]) == (" Hello world", " hmm")
    assert "reasoning" not in a


def test_fast_path_takes_embeddings_and_leaves_the_rest_to_litellm(tiny_stack):
    import httpx

    url, h = tiny_stack["url"], auth(tiny_stack)
    r = httpx.post(url + "/embeddings", json={"model": "test/Tiny-Embed", "input": "x"}, timeout=60, headers=h)
    assert r.headers.get("x-memoria-route") == "fast" and len(r.json()["data"][0]["embedding"]) == 64
    r = httpx.post(url + "/completions", json={"model": CHAT, "prompt": "x", "max_tokens": 2}, timeout=60, headers=h)
    assert r.status_code == 200 and "x-memoria-route" not in r.headers
    r = httpx.post(url + "/embeddings", json={"model": "no-such-model", "input": "x"}, timeout=60, headers=h)
    assert r.status_code in (400, 404) and "no-such-model" in r.text and "x-memoria-route" not in r.headers


# ------------------------------------------------------------------------------------ exposure (no key)


def test_without_a_key_web_pages_and_rebinding_names_are_refused(tiny_stack):
    """In the default no-key mode: a rebinding Host and a browser's cross-origin request get 403 on both
    paths; a plain client (no Origin) on 127.0.0.1 works as the guide shows."""
    import httpx

    no_key_mode(tiny_stack)
    url, body = tiny_stack["url"] + "/embeddings", {"input": "x", "model": EMBED}
    for route in ("fast", "litellm"):
        h = {"x-memoria-route": route}
        assert httpx.post(url, json=body, headers=h).status_code == 200
        rebinding = httpx.post(url, json=body, headers={**h, "Host": "rebind.example:8200"})
        assert rebinding.status_code == 403 and "loopback" in rebinding.json()["error"]["message"]
        page = httpx.post(url, json=body, headers={**h, "Origin": "http://evil.example"})
        assert page.status_code == 403 and "allowed_origins" in page.json()["error"]["message"]
    preflight = httpx.options(url, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers


def test_image_urls_are_not_fetched_by_the_worker(client):
    """vLLM fetches http(s) image URLs it is given: memoria lets it fetch from no domain unless the profile
    says (media_domains); data: URLs work as the guide shows."""
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(
            model=OCR,
            max_tokens=4,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "read"},
                        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/private.png"}},
                    ],
                }
            ],
        )
    assert "allowed domains" in str(e.value)
