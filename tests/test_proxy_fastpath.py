"""The proxy fast path's pure parts: which requests it takes, where it sends them, what it renames.
(Through the real proxy and vLLM: tests/contract/, which run with the fast path on, as users do.)"""

from __future__ import annotations

import asyncio
import json

import pytest

from memoria_cli.plugins import proxy_fastpath as fp


class Router:
    """The one LiteLLM router method the fast path reads, over a config-shaped model list."""

    def __init__(self, model_list: list[dict], aliases: dict[str, str]) -> None:
        self.model_list, self.aliases = model_list, aliases

    def get_model_list(self, model_name: str | None = None) -> list[dict]:
        name = self.aliases.get(model_name, model_name)
        return [d for d in self.model_list if d["model_name"] == name]


ROUTER = Router(
    [
        {
            "model_name": "embed",
            "litellm_params": {
                "model": "hosted_vllm/embed",
                "api_base": "http://127.0.0.1:8301/v1/",
                "api_key": "none",
            },
        },
        {
            "model_name": "chat",
            "litellm_params": {
                "model": "hosted_vllm/chat-upstream",
                "api_base": "http://127.0.0.1:8302/v1",
                "api_key": "sk-up",
            },
        },
        {"model_name": "cloud", "litellm_params": {"model": "anthropic/claude", "api_key": "x"}},
    ],
    {"Org/Embed-HF": "embed"},
)


def test_embeddings_by_name_go_to_the_worker_byte_for_byte():
    raw = b'{"model": "embed", "input": "hi"}'
    t = fp.plan_request("/v1/embeddings", raw, ROUTER)
    assert t == fp.Target(url="http://127.0.0.1:8301/v1/embeddings", body=raw, chat=False, api_key=None)
    assert fp.plan_request("/embeddings", raw, ROUTER).url == t.url


def test_an_alias_is_resolved_by_the_router_and_the_model_renamed_upstream():
    t = fp.plan_request("/v1/embeddings", b'{"model": "Org/Embed-HF", "input": ["a", "b"]}', ROUTER)
    assert json.loads(t.body) == {"model": "embed", "input": ["a", "b"]}
    t = fp.plan_request("/v1/chat/completions", b'{"model": "chat", "messages": []}', ROUTER)
    assert t.chat and t.api_key == "sk-up" and json.loads(t.body)["model"] == "chat-upstream"
    t = fp.plan_request("/v1/chat/completions", b'{"model": "chat", "messages": [], "stream": true}', ROUTER)
    assert t.chat and json.loads(t.body) == {"model": "chat-upstream", "messages": [], "stream": True}


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/embeddings", b'{"model": "nope", "input": "x"}'),  # unknown: LiteLLM words the 400
        ("/v1/chat/completions", b'{"model": "cloud", "messages": []}'),  # not a vLLM deployment
        ("/v1/embeddings", b"not json"),
        ("/v1/embeddings", b'["a list"]'),
        ("/v1/embeddings", b'{"input": "no model"}'),
        ("/v1/chat/completions", b'{"model": "chat", "messages": [], "mock_response": "hi"}'),  # LiteLLM-only
        ("/v1/completions", b'{"model": "chat", "prompt": "x"}'),  # not a fast route
    ],
)
def test_everything_else_is_left_to_litellm(path, raw):
    assert fp.plan_request(path, raw, ROUTER) is None
    assert fp.plan_request("/v1/embeddings", b'{"model": "embed", "input": "x"}', None) is None  # not loaded yet


def test_reasoning_becomes_reasoning_content_in_a_whole_answer():
    raw = json.dumps({"choices": [{"message": {"role": "assistant", "content": " Hello", "reasoning": " hmm"}}]})
    out = json.loads(fp.map_chat_body(raw.encode()))
    assert out["choices"][0]["message"] == {"role": "assistant", "content": " Hello", "reasoning_content": " hmm"}
    plain = b'{"choices": [{"message": {"content": "the word \\"reasoning\\" in text"}}]}'
    assert fp.map_chat_body(plain) is plain
    assert fp.map_chat_body(b'{"error": {"message": "bad"}}') == b'{"error": {"message": "bad"}}'


def event(delta: dict) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"


def test_stream_deltas_are_renamed_even_when_events_arrive_in_pieces():
    stream = (
        event({"role": "assistant", "content": ""})
        + event({"reasoning": " hm"})
        + event({"reasoning": "m"})
        + event({"content": " Hello"})
        + b"data: [DONE]\n\n"
    )
    for size in (1, 7, 64, len(stream)):
        r = fp.SseRenamer()
        out = b"".join(r.feed(stream[i : i + size]) for i in range(0, len(stream), size)) + r.flush()
        events = [e for e in out.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]" and len(events) == 5
        deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in events[:-1]]
        assert deltas == [
            {"role": "assistant", "content": ""},
            {"reasoning_content": " hm"},
            {"reasoning_content": "m"},
            {"content": " Hello"},
        ]


def test_an_event_without_reasoning_passes_as_it_came():
    r = fp.SseRenamer()
    e = b'data: {"choices":[{"delta":{"content":"x"}}],  "spacing": "kept"}\n\n'
    assert r.feed(e) == e


def test_a_stream_cut_short_ends_with_an_error_event_the_sdk_raises():
    data = fp.stream_error("the model worker went away")
    assert data.startswith(b"data: ") and data.endswith(b"\n\n")
    assert json.loads(data[6:])["error"]["message"] == "the model worker went away"


def test_replay_gives_the_body_once_then_the_clients_messages():
    async def go() -> list[dict]:
        queue = [
            {"type": "http.request", "body": b"a", "more_body": True},
            {"type": "http.request", "body": b"b", "more_body": False},
            {"type": "http.disconnect"},
        ]

        async def receive() -> dict:
            return queue.pop(0)

        body = await fp.read_body(receive)
        again = fp.replay(body, receive)
        return [await again(), await again()]

    assert asyncio.run(go()) == [
        {"type": "http.request", "body": b"ab", "more_body": False},
        {"type": "http.disconnect"},
    ]


def test_off_switch():
    assert fp.enabled({}) and fp.enabled({fp.ENV: "1"})
    assert not fp.enabled({fp.ENV: "0"}) and not fp.enabled({fp.ENV: "false"})


def run_asgi(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> list[dict]:
    """One POST through `app`: what it sent back."""
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    queue.append({"type": "http.disconnect"})
    sent: list[dict] = []

    async def receive() -> dict:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/audio/transcriptions", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


class Echo:
    """An inner app that reads the whole body (as LiteLLM does), then answers 200."""

    def __init__(self) -> None:
        self.read: list[bytes] = []
        self.called = False

    async def __call__(self, scope, receive, send):
        self.called = True
        while True:
            m = await receive()
            if m["type"] != "http.request":
                return
            self.read.append(m.get("body", b""))
            if not m.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def test_bodies_over_the_limit_get_413_before_anyone_reads_them():
    inner = Echo()
    sent = run_asgi(fp.BodyLimit(inner, 3 * 2**20), [(b"content-length", b"5000000")], [b"x" * 5_000_000])
    assert sent[0]["status"] == 413 and not inner.called  # declared too big: refused unread
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == 413 and error["message"].startswith("request body over 3 MiB")


def test_a_chunked_body_is_counted_as_it_arrives():
    inner = Echo()
    limited = fp.BodyLimit(inner, 1000)
    sent = []
    queue = [
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": False},
    ]

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    asyncio.run(limited({"type": "http", "method": "POST", "path": "/x", "headers": []}, receive, send))
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [413]
    assert inner.read == [b"x" * 600]  # the inner app saw the first chunk, then the client as gone
    assert len(queue) == 1  # the rest was never read


def test_bodies_within_the_limit_pass_untouched():
    inner = Echo()
    sent = run_asgi(fp.BodyLimit(inner, 1000), [(b"content-length", b"10")], [b"0123456789"])
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [200]
    assert inner.read == [b"0123456789"]
    assert fp.body_limit({fp.BODY_LIMIT_ENV: "2048"}) == 2048 and fp.body_limit({}) == fp.DEFAULT_BODY_LIMIT


@pytest.mark.parametrize(
    ("loopback_only", "host", "origin", "status"),
    [
        (True, b"127.0.0.1:8200", None, 200),
        (True, b"localhost:8200", None, 200),
        (True, b"[::1]:8200", None, 200),
        (True, b"rebind.example:8200", None, 403),  # DNS rebinding: a page's own name, resolved to 127.0.0.1
        (True, None, None, 403),
        (True, b"127.0.0.1:8200", b"http://evil.example", 403),  # a web page the user visits
        (True, b"127.0.0.1:8200", b"http://127.0.0.1:8200", 200),  # the proxy's own origin
        (True, b"127.0.0.1:8200", b"http://localhost:3000", 200),  # listed in proxy.allowed_origins
        (False, b"memoria.lan:8200", None, 200),  # with a key: any name clients use
        (False, b"memoria.lan:8200", b"http://evil.example", 403),
        (False, b"memoria.lan:8200", b"http://memoria.lan:8200", 200),  # the status page, on its own origin
        (True, b"rebind.example:8200", b"http://rebind.example:8200", 403),  # same-origin, but not loopback
    ],
)
def test_the_guard_refuses_what_a_web_page_could_send(loopback_only, host, origin, status):
    inner = Echo()
    guard = fp.RequestGuard(inner, loopback_only, ["http://localhost:3000/"], 8200)
    headers = [(b"host", host)] if host else []
    headers += [(b"origin", origin)] if origin else []
    sent = run_asgi(guard, headers, [b"{}"])
    assert sent[0]["status"] == status
    assert inner.called == (status == 200)


def test_one_reading_of_credentials():
    assert fp.bearer([b"Bearer sk-1"]) == "sk-1" and fp.bearer(["bearer sk-1"]) == "sk-1"
    assert fp.bearer([]) is None and fp.bearer([b"Bearer a", b"Bearer b"]) is None
    assert fp.bearer([b"Basic abc"]) is None and fp.bearer([b"Bearer "]) is None
    assert fp.key_matches([b"Bearer sk-1"], "sk-1") and not fp.key_matches([b"Bearer sk-1 "], "sk-1")
    assert not fp.key_matches([b"Bearer sk-1", b"Bearer sk-1"], "sk-1")


def test_a_members_route_mark_is_replaced_by_ours_and_hop_headers_dropped():
    upstream = [("Content-Type", "application/json"), ("x-memoria-route", "fast"), ("Content-Length", "9")]
    assert fp.relayed_headers(upstream) == [(b"content-type", b"application/json"), (b"x-memoria-route", b"fast")]
