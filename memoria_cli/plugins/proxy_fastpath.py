"""The proxy's fast path: embeddings and chat relayed straight to the vLLM worker, inside the LiteLLM process.

LiteLLM's own request path costs ~10-13 ms of CPU per request (logging, cost tracking, ~20 middlewares,
response objects); with short requests that, not vLLM, bounds throughput (0.40x direct for one-sentence
embeddings at concurrency 16 on 2 cores: shared/notes/proxy-perf.md). This ASGI layer sits in front of
LiteLLM's app and takes only what it can serve exactly as the API guide promises:

- POST /v1/embeddings and /v1/chat/completions (with or without /v1), JSON bodies, no LiteLLM-only parameters;
- with the master key when one is set (anything else falls through to LiteLLM's auth, which answers 401);
- for a model that LiteLLM's own router maps (names and aliases, read live from `llm_router`) to a
  `hosted_vllm` / `openai` deployment.

It relays the bytes and renames vLLM's `reasoning` to the guide's `reasoning_content` (in the message, and in
every stream delta). On a cluster's entry some deployments are other hosts' proxies (plugins/members.py puts
them in the router): one that cannot be reached within MEMBER_CONNECT seconds, or answers 5xx before a byte is
sent on, is taken out of the router at once and the request goes to the next deployment, so a dead or
blackholed host costs a request one short wait, not a lost answer (the member watch puts it back when it
answers again). Everything else — other routes, unknown models, another key, a worker that refuses the
connection or drops it before answering — goes to LiteLLM unchanged, with the body replayed, so LiteLLM stays
the router and the one place that words those errors. What a taken request skips: LiteLLM's callbacks and
logging (memoria's own callback only touches transcriptions), and its retries after an answer has started.

Pure parts (`plan_request`, `rename_reasoning`, `SseRenamer`) need no LiteLLM; aiohttp is imported on first use.
Off with `proxy.fast_path: false` in the profile (MEMORIA_FAST_PATH=0 in the proxy's environment).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import os
import random
from dataclasses import dataclass
from typing import Any

UPSTREAM = {
    "/v1/embeddings": "/embeddings",
    "/embeddings": "/embeddings",
    "/v1/chat/completions": "/chat/completions",
    "/chat/completions": "/chat/completions",
}
PROVIDERS = ("hosted_vllm", "openai")
# Parameters only LiteLLM understands: such requests take LiteLLM's path, where they mean something.
LITELLM_ONLY = frozenset(
    {
        "mock_response",
        "fallbacks",
        "context_window_fallback_dict",
        "num_retries",
        "caching",
        "cache",
        "guardrails",
        "tags",
        "litellm_metadata",
        "user_config",
        "api_base",
        "api_key",
        "base_url",
        "extra_headers",
        "metadata",
    }
)
# In an answer: the fast path answered (LiteLLM's own answers carry x-litellm-*). In a request, the value
# `litellm` sends it down LiteLLM's own path (side-by-side benchmarks, debugging).
ROUTE_HEADER = (b"x-memoria-route", b"fast")
HOP = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"date", b"server"})
NOT_COPIED = HOP | {ROUTE_HEADER[0]}  # a member's own "fast" is not passed on beside ours
ENV = "MEMORIA_FAST_PATH"
UPSTREAM_KEEPALIVE = 3.0  # below uvicorn's 5 s, so a pooled connection is never reused just as vLLM closes it
MEMBER_PREFIX = "memoria-member:"  # plugins/members.py ID_PREFIX: a deployment that is another host
MEMBER_CONNECT = 1.0  # seconds: a host on the LAN connects in well under a millisecond; a cut link never does
MEMBER_RECHECK = 0.5  # seconds between looks, while a member's answer is awaited, at whether it is still in
MAX_TRIES = 4  # deployments one request may try before LiteLLM's own path takes it


@dataclass(frozen=True)
class Target:
    url: str
    body: bytes
    chat: bool
    api_key: str | None
    deployment: str = ""  # its id in the router
    member: bool = False  # another host of a cluster (plugins/members.py)


@dataclass(frozen=True)
class Picked:
    base: str
    name: str
    key: str | None
    deployment: str

    @property
    def member(self) -> bool:
        return self.deployment.startswith(MEMBER_PREFIX)


def _id(deployment: Any) -> str:
    info = deployment.get("model_info") if isinstance(deployment, dict) else None
    return str(info.get("id") or "") if isinstance(info, dict) else ""


def pick_deployment(router: Any, model: Any, avoid: frozenset[str] = frozenset()) -> Picked | None:
    """One of the vLLM deployments LiteLLM routes `model` to, at random (as LiteLLM's simple-shuffle), not
    one of `avoid` (ids this request already failed on)."""
    if router is None or not isinstance(model, str):
        return None
    deployments = [d for d in router.get_model_list(model_name=model) or [] if _id(d) not in avoid]
    if not deployments:
        return None
    chosen = random.choice(deployments)
    params = chosen.get("litellm_params") or {}
    provider, _, name = str(params.get("model", "")).partition("/")
    base = params.get("api_base")
    if provider not in PROVIDERS or not name or not isinstance(base, str):
        return None
    key = params.get("api_key")
    if isinstance(key, str) and key.startswith("os.environ/"):  # memoria's worker keys (proxy_config.py)
        key = os.environ.get(key.removeprefix("os.environ/"))
    return Picked(
        base.rstrip("/"), name, key if isinstance(key, str) and key not in ("", "none") else None, _id(chosen)
    )


def plan_request(path: str, raw: bytes, router: Any, avoid: frozenset[str] = frozenset()) -> Target | None:
    """Where a request goes upstream, with its body ready to send; None when LiteLLM should take it."""
    suffix = UPSTREAM.get(path)
    if suffix is None:
        return None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or LITELLM_ONLY.intersection(body):
        return None
    found = pick_deployment(router, body.get("model"), avoid)
    if found is None:
        return None
    if body["model"] != found.name:
        body["model"] = found.name
        raw = _dumps(body)
    chat = suffix == "/chat/completions"
    return Target(found.base + suffix, raw, chat, found.key, found.deployment, found.member)


def evict(router: Any, deployment: str) -> None:
    """A member that failed a request leaves the router now; the member watch puts it back when it answers."""
    try:
        router.delete_deployment(id=deployment)
    except Exception:  # LiteLLM's own bookkeeping: the request is retried elsewhere either way
        pass


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def rename_reasoning(obj: Any) -> bool:
    """vLLM's `reasoning` -> `reasoning_content` in each choice's message / delta, in place; True if changed."""
    changed = False
    for choice in obj.get("choices") or () if isinstance(obj, dict) else ():
        for part in ("message", "delta"):
            m = choice.get(part) if isinstance(choice, dict) else None
            if isinstance(m, dict) and "reasoning" in m:
                value = m.pop("reasoning")
                if m.get("reasoning_content") is None:
                    m["reasoning_content"] = value
                changed = True
    return changed


def relayed_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as the client gets them: hop-by-hop ones dropped, and one route mark,
    ours (a cluster member's fast path marks its answer too)."""
    out = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in headers
        if k.lower().encode("latin-1") not in NOT_COPIED
    ]
    return [*out, ROUTE_HEADER]


def map_chat_body(raw: bytes) -> bytes:
    """A whole chat completion with `reasoning_content`; untouched when there is nothing to rename."""
    if b'"reasoning"' not in raw:
        return raw
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw
    return _dumps(obj) if rename_reasoning(obj) else raw


# vLLM's words when a prompt leaves no room for an answer: it sets max_tokens to the context left, and refuses
# 0 (vllm/sampling_params.py `_verify_args`). The user's question is "why", so the answer says it.
NO_ROOM = b"max_tokens must be at least 1, got 0"


def explain_error(raw: bytes) -> bytes:
    """A 400 from a chat worker, reworded where vLLM's words hide the cause; otherwise untouched."""
    if NO_ROOM not in raw:
        return raw
    try:
        obj = json.loads(raw)
        error = obj["error"]
        said = str(error["message"])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return raw
    error["message"] = (
        "the conversation fills the model's whole context: no room is left for an answer. Shorten it (drop "
        f"earlier turns) or start a new one, or give the model a longer context in the profile (vLLM: {said})"
    )
    return _dumps(obj)


class SseRenamer:
    """Server-sent events in, the same events out with `reasoning` renamed; events split across reads are
    held until whole. Events without the word pass as they came."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self._pending + data
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._pending = data
            return b""
        self._pending = data[cut + 2 :]
        whole = data[: cut + 2]
        if b'"reasoning"' not in whole:
            return whole
        return b"".join(self._event(e) + b"\n\n" for e in whole[:-2].split(b"\n\n"))

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    @staticmethod
    def _event(event: bytes) -> bytes:
        if not event.startswith(b"data: ") or b'"reasoning"' not in event:
            return event
        try:
            obj = json.loads(event[6:])
        except (ValueError, UnicodeDecodeError):
            return event
        if not rename_reasoning(obj):
            return event
        return b"data: " + _dumps(obj)


def stream_error(message: str) -> bytes:
    """The event OpenAI's SDKs raise an APIError for, when a worker goes away in the middle of a stream."""
    err = {"error": {"message": message, "type": "upstream_error", "param": None, "code": 502}}
    return b"data: " + json.dumps(err).encode() + b"\n\n"


def bearer(values: list[bytes] | list[str]) -> str | None:
    """The one reading of a request's credentials, for the fast path and LiteLLM's path alike: exactly one
    Authorization header, `Bearer <key>`, the key as given (no trimming). Two headers, another scheme or an
    empty key: no credentials."""
    if len(values) != 1:
        return None
    v = values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0]
    scheme, _, key = v.partition(" ")
    return key if scheme.lower() == "bearer" and key else None


def key_matches(values: list[bytes] | list[str], master: str) -> bool:
    given = bearer(values)
    return given is not None and hmac.compare_digest(given.encode(), master.encode())


class FastPath:
    """ASGI app: the fast path in front of `app` (LiteLLM's middleware stack). `router` returns LiteLLM's live
    router (None until the proxy has loaded its config)."""

    def __init__(self, app: Any, router: Any, master_key: str | None = None) -> None:
        self.app, self.router = app, router
        self.master = master_key or None
        self.session: Any = None
        self.frozen = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self.frozen and scope.get("type") == "http":  # the first request: start-up is over
            self.frozen = True
            gc.freeze()  # start-up's objects (LiteLLM's are many) out of every later collection: no long pauses
        if scope.get("type") != "http" or scope.get("method") != "POST" or scope.get("path") not in UPSTREAM:
            await self.app(scope, receive, send)
            return
        route = next((v for k, v in scope.get("headers", ()) if k == ROUTE_HEADER[0]), b"")
        if route == b"litellm":  # asked for LiteLLM's own path (benchmarks, debugging)
            await self.app(scope, receive, send)
            return
        if self.master is not None and not key_matches(
            [v for k, v in scope.get("headers", ()) if k == b"authorization"], self.master
        ):
            await self.app(scope, receive, send)  # LiteLLM's auth (the same check) words the 401
            return
        raw = await read_body(receive)
        tried: set[str] = set()
        for _ in range(MAX_TRIES):
            router = self.router()
            target = plan_request(scope["path"], raw, router, frozenset(tried))
            if target is None:
                break
            if await self.relay(target, receive, send):
                return
            if not target.member:
                break  # a local worker: LiteLLM's path words what happens (and retries once)
            tried.add(target.deployment)
            evict(router, target.deployment)
        await self.app(scope, replay(raw, receive), send)

    async def relay(self, t: Target, receive: Any, send: Any) -> bool:
        """Send `t` to the worker and its answer to the client; False (nothing sent) when the worker could not
        be reached or dropped the connection before answering, so LiteLLM takes the request instead. A chat,
        streamed or not, stops on the worker when its client goes (uvicorn drops what is sent after that, so
        the disconnect is watched): a timed-out client must not leave the worker generating for nobody."""
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=UPSTREAM_KEEPALIVE),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=10, sock_read=600
                ),  # core/units.py REQUEST_TIMEOUT
                skip_auto_headers=("User-Agent",),
            )
        headers = {"Content-Type": "application/json"}
        if t.api_key:
            headers["Authorization"] = f"Bearer {t.api_key}"
        if not t.chat:  # embeddings are short: no watcher (two tasks a request)
            return await self._relay(t, headers, send)
        work = asyncio.ensure_future(self._relay(t, headers, send))
        gone = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, gone):
                if not task.done():
                    task.cancel()  # client gone: closing the upstream connection makes vLLM abort the request
            # let the cancellations run (a cancelled task has no result until then)
            await asyncio.gather(work, gone, return_exceptions=True)
        if work.cancelled():
            return True  # the client left: nothing is owed to anyone
        return work.result()

    async def _relay(self, t: Target, headers: dict[str, str], send: Any) -> bool:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=MEMBER_CONNECT, sock_read=600) if t.member else None
        try:
            sent = self.session.post(t.url, data=t.body, headers=headers, timeout=timeout or self.session.timeout)
            resp = await (self._while_member(sent, t.deployment) if t.member else sent)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        if resp is None:
            return False  # the member left the rotation while this waited: another replica answers
        async with resp:
            if t.member and resp.status >= 500:
                return False  # the host is there but its worker is not: another replica answers
            out = relayed_headers(resp.headers.items())
            if resp.content_type != "text/event-stream":
                try:
                    body = await resp.read()
                except (aiohttp.ClientError, OSError):
                    return False
                if t.chat and resp.status == 200:
                    body = map_chat_body(body)
                elif t.chat and resp.status == 400:
                    body = explain_error(body)
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": [*out, (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return True
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            renamer = SseRenamer() if t.chat else None
            try:
                async for chunk in resp.content.iter_any():
                    data = renamer.feed(chunk) if renamer else chunk
                    if data:
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                tail = renamer.flush() if renamer else b""
            except (aiohttp.ClientError, OSError) as exc:
                tail = stream_error(f"the model worker went away mid-stream ({type(exc).__name__}); retry")
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            return True

    async def _while_member(self, sent: Any, deployment: str) -> Any:
        """The member's answer, or None as soon as the member watch (or another request) has taken it out of
        the router: a frozen host accepts connections and never answers, and until a byte of the answer has
        come nothing is lost by asking another replica."""
        task = asyncio.ensure_future(sent)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=MEMBER_RECHECK)
                if done:
                    return task.result()
                router = self.router()
                if router is not None and router.get_deployment(model_id=deployment) is None:
                    return None
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def read_body(receive: Any) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def wait_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def replay(raw: bytes, receive: Any) -> Any:
    """A `receive` that gives the already-read body once, then the client's own messages."""
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        message: dict[str, Any] = await receive()
        return message

    return again


class BodyLimit:
    """ASGI app: requests whose body is over `limit` bytes get 413 before anything buffers them (LiteLLM and
    the fast path both read whole bodies into memory: a 200 MB body took the proxy from 37 to 609 MB). A
    declared Content-Length is refused before reading; a chunked body is counted as it arrives, the app
    then sees the client as gone."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await self.refuse(send, 400, "invalid Content-Length")
                    return
                if declared > self.limit:
                    await self.refuse(send, 413, self.too_large())
                    return
        seen, over, started = 0, False, False

        async def counted() -> dict[str, Any]:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    if not started:
                        await self.refuse(send, 413, self.too_large())
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal started
            if over:
                return  # the 413 is the answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, guarded)

    def too_large(self) -> str:
        return (
            f"request body over {self.limit // 2**20} MiB (proxy.max_body_mb in the profile): send large "
            "audio in pieces, as `memoria transcribe` does, and images downscaled"
        )

    @staticmethod
    async def refuse(
        send: Any,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        headers: tuple[tuple[bytes, bytes], ...] = ((b"connection", b"close"),),
    ) -> None:
        """An OpenAI-shaped error answer from memoria's own layers (this one, the guard, plugins/hold.py)."""
        body = json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": status}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI app: what a web page the user visits must not do with the endpoint.

    - Without a key (loopback only), the Host must be a loopback name: a page on a rebinding domain that
      resolves to 127.0.0.1 sends its own name as Host (DNS rebinding).
    - A browser's cross-origin request (its Origin header, preflights included) is refused unless the
      profile lists that origin (`proxy.allowed_origins`); clients that are not browsers send no Origin. A
      page's request to its own origin (Origin is http:// + Host: the status page at /ui) is not cross-origin.
    Both get 403 before anything runs, on the fast path and LiteLLM's alike."""

    LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})

    def __init__(self, app: Any, loopback_only: bool, origins: list[str], port: int) -> None:
        self.app, self.loopback_only = app, loopback_only
        own = {f"http://{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}
        self.origins = frozenset(o.rstrip("/").lower() for o in origins) | own

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for k, v in scope.get("headers", ()):
            if k == b"host":
                host = v.decode("latin-1").lower()
            elif k == b"origin":
                origin = v.decode("latin-1").lower().rstrip("/")
        if self.loopback_only and (host is None or _hostname(host) not in self.LOOPBACK_HOSTS):
            return await BodyLimit.refuse(
                send,
                403,
                f"Host {host!r} is not this machine's loopback: without a "
                "key the endpoint answers only http://127.0.0.1 (or localhost)",
            )
        if origin is not None and origin not in self.origins and origin != f"http://{host}":  # same-origin is fine
            return await BodyLimit.refuse(
                send,
                403,
                f"requests from web pages at {origin} are refused: list the "
                "origin in the profile's proxy.allowed_origins to allow it",
            )
        await self.app(scope, receive, send)


def _hostname(host: str) -> str:
    """'127.0.0.1:8200' -> '127.0.0.1', '[::1]:8200' -> '[::1]'."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


GUARD_ENV = ("MEMORIA_LOOPBACK_ONLY", "MEMORIA_ALLOWED_ORIGINS", "MEMORIA_PROXY_PORT")


def guard(app: Any, environ: dict[str, str] | None = None) -> RequestGuard:
    env = os.environ if environ is None else environ
    origins = [o for o in env.get("MEMORIA_ALLOWED_ORIGINS", "").split(",") if o.strip()]
    return RequestGuard(
        app, env.get("MEMORIA_LOOPBACK_ONLY", "1") != "0", origins, int(env.get("MEMORIA_PROXY_PORT", "8200"))
    )


BODY_LIMIT_ENV = "MEMORIA_MAX_BODY_BYTES"
DEFAULT_BODY_LIMIT = 32 * 2**20  # > vLLM's 25 MB upload cap with its multipart overhead; a 2048x2048 PNG


def body_limit(environ: dict[str, str] | None = None) -> int:
    try:
        return max(1, int((os.environ if environ is None else environ).get(BODY_LIMIT_ENV, DEFAULT_BODY_LIMIT)))
    except ValueError:
        return DEFAULT_BODY_LIMIT


def enabled(environ: dict[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get(ENV, "1") not in ("0", "false", "False", "")
