"""memoria's proxy layers in process, as the launcher composes them (litellm_hooks.compose), in front of a
stand-in for LiteLLM's app, relaying to a fake vLLM worker on a thread: the fast path's relay, its fall-through
to LiteLLM, the guard and the body limit, with no process started (llama-swap tests its proxy this way).
The same layers in front of the real LiteLLM and vLLM: tests/contract/."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from memoria_cli.plugins import litellm_hooks as hooks

ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris", "reasoning": "think"}}]}
EVENTS = [
    {"choices": [{"index": 0, "delta": {"reasoning": "thi"}}]},
    {"choices": [{"index": 0, "delta": {"content": "Paris"}}]},
]
NO_ROOM = {"error": {"message": "max_tokens must be at least 1, got 0.", "type": "BadRequestError", "code": 400}}


class Worker(BaseHTTPRequestHandler):
    """A vLLM worker's two routes, answering as vLLM 0.32 does (`reasoning`, not `reasoning_content`)."""

    seen: ClassVar[list[tuple[str, dict[str, Any], str]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        Worker.seen.append((self.path, body, self.headers.get("authorization", "")))
        if body.get("messages") == [{"role": "user", "content": "long"}]:
            return self._send(400, "application/json", json.dumps(NO_ROOM).encode())
        if self.path == "/v1/embeddings":
            return self._send(
                200, "application/json", json.dumps({"data": [{"index": 0, "embedding": [0.5]}]}).encode()
            )
        if body.get("stream"):
            sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in EVENTS) + b"data: [DONE]\n\n"
            return self._send(200, "text/event-stream", sse)
        self._send(200, "application/json", json.dumps(ANSWER).encode())

    def _send(self, status: int, ctype: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def worker() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Worker)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


class Router:
    def __init__(self, port: int) -> None:
        self.port = port

    def get_model_list(self, model_name: str | None = None) -> list[dict[str, Any]]:
        if model_name not in ("chat", "embed"):
            return []
        base = f"http://127.0.0.1:{self.port}/v1"
        return [{"litellm_params": {"model": f"hosted_vllm/{model_name}-up", "api_base": base, "api_key": "sk-w"}}]


async def litellm(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands for LiteLLM's app: says it answered, with what it was sent."""
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    data = json.dumps({"litellm": True, "path": scope["path"], "body": body.decode()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def call(
    app: Any, path: str, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"host": "127.0.0.1:8200", "content-type": "application/json", "content-length": str(len(raw))}
    hdrs.update(headers or {})
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
    }
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    out: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # the client stays: no disconnect
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    async def run() -> None:
        await app(scope, receive, send)
        fast = getattr(app, "memoria_fast", None)
        if fast is not None and fast.session is not None:
            await fast.session.close()

    asyncio.run(run())
    start = next(m for m in out if m["type"] == "http.response.start")
    return (
        start["status"],
        dict(start["headers"]),
        b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body"),
    )


ENV = {"MEMORIA_LOOPBACK_ONLY": "1", "MEMORIA_PROXY_PORT": "8200", "MEMORIA_MAX_BODY_BYTES": "4096"}


def app_for(port: int, **env: str) -> Any:
    return hooks.compose(litellm, router=lambda: Router(port), environ={**ENV, **env})


def test_a_chat_is_relayed_to_its_worker_with_reasoning_renamed(worker):
    Worker.seen.clear()
    status, headers, body = call(
        app_for(worker), "/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 200 and headers[b"x-memoria-route"] == b"fast"
    assert json.loads(body)["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Paris",
        "reasoning_content": "think",
    }
    path, sent, auth = Worker.seen[-1]
    assert (path, sent["model"], auth) == ("/v1/chat/completions", "chat-up", "Bearer sk-w")


def test_a_stream_is_relayed_event_by_event_renamed(worker):
    status, _, body = call(app_for(worker), "/v1/chat/completions", {"model": "chat", "stream": True, "messages": []})
    events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")]
    assert status == 200 and [e["choices"][0]["delta"] for e in events] == [
        {"reasoning_content": "thi"},
        {"content": "Paris"},
    ]
    assert body.endswith(b"data: [DONE]\n\n")


def test_embeddings_are_relayed_byte_for_byte(worker):
    status, headers, body = call(app_for(worker), "/embeddings", {"model": "embed", "input": "x"})
    assert (status, headers[b"x-memoria-route"], json.loads(body)) == (
        200,
        b"fast",
        {"data": [{"index": 0, "embedding": [0.5]}]},
    )


def test_a_conversation_that_fills_the_context_is_told_so(worker):
    status, _, body = call(
        app_for(worker), "/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "long"}]}
    )
    message = json.loads(body)["error"]["message"]
    assert status == 400 and message.startswith("the conversation fills the model's whole context")
    assert "max_tokens must be at least 1, got 0" in message  # vLLM's own words kept, after the explanation


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/chat/completions", {"model": "unknown", "messages": []}, {}),  # not a model the router maps
        ("/v1/chat/completions", {"model": "chat", "messages": [], "fallbacks": ["x"]}, {}),  # LiteLLM-only
        ("/v1/chat/completions", {"model": "chat", "messages": []}, {"x-memoria-route": "litellm"}),
        ("/v1/completions", {"model": "chat", "prompt": "x"}, {}),  # another route
    ],
)
def test_what_the_fast_path_does_not_take_reaches_litellm_with_its_body(worker, path, body, headers):
    status, _, got = call(app_for(worker), path, body, headers)
    assert status == 200 and json.loads(got) == {"litellm": True, "path": path, "body": json.dumps(body)}


def test_a_worker_that_is_down_leaves_the_request_to_litellm():
    status, _, got = call(app_for(1), "/v1/chat/completions", {"model": "chat", "messages": []})
    assert status == 200 and json.loads(got)["litellm"] is True  # port 1 refuses: LiteLLM words that error


def test_the_off_switch_sends_everything_to_litellm(worker):
    status, _, got = call(
        app_for(worker, MEMORIA_FAST_PATH="0"), "/v1/chat/completions", {"model": "chat", "messages": []}
    )
    assert json.loads(got)["litellm"] is True


def test_the_guard_and_the_body_limit_sit_in_front_of_everything(worker):
    status, _, body = call(app_for(worker), "/v1/chat/completions", {"model": "chat"}, {"host": "evil.example:8200"})
    assert status == 403 and b"not this machine's loopback" in body
    status, _, body = call(app_for(worker), "/v1/embeddings", b"x" * 5000)
    assert status == 413
