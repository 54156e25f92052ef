"""memoria's plug-in for the LiteLLM proxy: transcription `response_format` text, srt and vtt as OpenAI answers them.

vLLM answers json, text (as JSON) and verbose_json only, and LiteLLM's proxy serialises every transcription
to JSON, so `response_format="srt"` would never give SRT. LiteLLM loads this file as a custom callback
(`litellm_settings.callbacks`, copied beside the generated config); its pre-call hook asks the worker for
json and notes what the client wanted; a wrapper on the proxy's own transcription route then renders that
JSON as plain text, SRT or WebVTT. Everything else passes through untouched.

With a master key, `user_api_key_auth` (general_settings.custom_auth) answers a missing or wrong key with 401.
In front of it all sits the fast path for embeddings and chat (`memoria_fastpath.py`, copied beside this file
from memoria_cli/plugins/proxy_fastpath.py).

The layers are mounted explicitly: memoria's launcher (proxy_launcher.py, copied as memoria_proxy.py) calls
`compose(app)` on LiteLLM's app and serves the result; importing this file changes nothing. LiteLLM loads it
again by path for the callback and the auth function (a second module object): what both must share, the
transcription request's note, lives in memoria_transcripts, which `_sibling` loads once per process.

The renderers are pure and live apart, in transcripts.py (copied beside this file as memoria_transcripts.py),
so memoria's own client uses them without importing this plug-in.
"""

from __future__ import annotations

import functools
import io
import json
from typing import Any

ROUTES = ("/v1/audio/transcriptions", "/audio/transcriptions")


def _sibling(name: str, source: str | None = None) -> Any:
    """A module copied beside this file (LiteLLM loads this one by path, so its folder is not importable);
    `source`: the file's name in memoria_cli/, where this file is read from when it is not a copy."""
    import importlib.util
    import sys
    from pathlib import Path

    if name not in sys.modules:
        path = Path(__file__).with_name(f"{name}.py")
        if not path.exists() and source:
            path = path.with_name(source)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_transcripts = _sibling("memoria_transcripts", "transcripts.py")
render, wav_duration, RENDERED = _transcripts.render, _transcripts.wav_duration, _transcripts.RENDERED
_REQUEST = _transcripts.REQUEST_NOTE


def mark(note: dict[str, Any] | None, data: dict[str, Any], call_type: str) -> dict[str, Any]:
    """The pre-call hook's work on a transcription: note what the client asked for; ask the worker for json
    where memoria renders the answer (text, srt, vtt) itself."""
    fmt = str(data.get("response_format") or "")
    if call_type in ("transcription", "atranscription") and note is not None:
        note["requested"] = fmt
        f = data.get("file")
        if isinstance(f, io.BytesIO):
            note["duration"] = wav_duration(f.getvalue())
        if fmt in RENDERED:
            note["format"] = fmt
            data["response_format"] = "json"  # what every vLLM answers; rendered back on the way out
    return data


async def _run(inner: Any, scope: dict[str, Any], receive: Any) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Run the route once, collecting (note, response start, whole body) instead of sending them."""
    note: dict[str, Any] = {}
    token = _REQUEST.set(note)
    start: dict[str, Any] = {"type": "http.response.start", "status": 500, "headers": []}
    chunks: list[bytes] = []

    async def collect(message: dict[str, Any]) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await inner(scope, receive, collect)
    finally:
        _REQUEST.reset(token)
    return note, start, b"".join(chunks)


def wrap_route(inner: Any) -> Any:
    """ASGI wrapper of the transcription route: render the JSON answer the hook asked for as text, SRT or
    WebVTT; and where vLLM fails on verbose_json (vLLM 0.32's `_get_verbose_segments` raises IndexError on
    some clips), ask again for json and answer verbose_json with one segment over the whole audio, saying so
    in `x-memoria-transcript`."""
    fp = _sibling("memoria_fastpath", "proxy_fastpath.py")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = await fp.read_body(receive)  # kept for a second try (BodyLimit bounds it)
        note, start, body = await _run(inner, scope, fp.replay(raw, receive))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length",)]
        if start["status"] >= 500 and note.get("requested") == "verbose_json":
            ctype = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), b"")
            again = _transcripts.with_form_field(raw, ctype, "response_format", "json")
            if again is not None:
                note2, start2, body2 = await _run(inner, scope, fp.replay(again, receive))
                if start2["status"] == 200:
                    try:
                        body = json.dumps(
                            _transcripts.one_cue_verbose(json.loads(body2), note.get("duration"))
                        ).encode()
                        start = start2
                        headers = [
                            (k, v)
                            for k, v in start2.get("headers", [])
                            if k.lower() not in (b"content-length", b"content-type")
                        ]
                        headers += [
                            (b"content-type", b"application/json"),
                            (b"x-memoria-transcript", b"one segment: the worker failed to make segments"),
                        ]
                    except (ValueError, TypeError, KeyError, AttributeError):
                        pass
        fmt = note.get("format")
        if fmt and start["status"] == 200:
            try:
                text = render(fmt, json.loads(body), note.get("duration")).encode()
                ctype = b"text/plain; charset=utf-8" if fmt != "vtt" else b"text/vtt; charset=utf-8"
                headers = [(k, v) for k, v in headers if k.lower() != b"content-type"] + [(b"content-type", ctype)]
                body = text
            except (ValueError, TypeError, KeyError, AttributeError):
                pass  # not the JSON we expected: pass it on as it is
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def front(inner: Any, fast_path: Any = None, body_limit: Any = None) -> Any:
    """`inner` with the transcription wrapper on its paths only, and given, the fast path (`fast_path(inner)`
    -> ASGI app) and the request-body limit (`body_limit(inner)`, outermost) in front of everything."""
    wrapped = wrap_route(inner)

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("path") in ROUTES:
            await wrapped(scope, receive, send)
        else:
            await inner(scope, receive, send)

    served = asgi if fast_path is None else fast_path(asgi)
    return served if body_limit is None else body_limit(served)


def compose(app: Any, router: Any = None, environ: dict[str, str] | None = None) -> Any:
    """memoria's layers around LiteLLM's app: body limit and request guard, memoria's own routes (/metrics, the
    status page: ops.py), requests held for parked models (hold.py), the fast path (unless turned off), the
    transcription wrapper; on a cluster's entry, the membership watch (members.py), started once LiteLLM's
    start-up is over. `router()` gives LiteLLM's live router (it is built at start-up, after this)."""
    import os

    env = os.environ if environ is None else environ
    fp = _sibling("memoria_fastpath", "proxy_fastpath.py")
    if router is None:

        def router() -> Any:
            import litellm.proxy.proxy_server as proxy_server

            return proxy_server.llm_router

    made: list[Any] = []

    def fast(inner: Any) -> Any:
        made.append(fp.FastPath(inner, router, env.get("LITELLM_MASTER_KEY") or None))
        return made[-1]

    ops = _sibling("memoria_ops", "ops.py")
    held = _sibling("memoria_hold", "hold.py")
    members = _sibling("memoria_members", "members.py")
    watch = members.watcher(router, env)
    routes: list[Any] = []

    def own_routes(inner: Any) -> Any:
        if watch is not None:  # a cluster's entry: a name no host serves now gets 503, not LiteLLM's 400
            model_of = functools.partial(held.model_of, transcripts=_transcripts)
            inner = members.Unserved(inner, watch, fp, model_of, held.ROUTES)
        routes.append(ops.ops(held.hold(inner, fp, ops, _transcripts, env), fp.key_matches, env))
        routes[-1].members = watch
        return routes[-1]

    served = front(
        app,
        fast if fp.enabled(env) else None,
        lambda inner: fp.BodyLimit(fp.guard(own_routes(inner), env), fp.body_limit(env)),
    )
    if watch is not None:
        served = after_startup(served, watch.start)
    served.memoria_fast = made[0] if made else None  # its upstream session, for whoever closes it
    return served


def after_startup(inner: Any, then: Any) -> Any:
    """`inner`, calling `then()` once its ASGI lifespan start-up has completed (LiteLLM's router exists by then)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "lifespan":
            await inner(scope, receive, send)
            return

        async def sent(message: dict[str, Any]) -> None:
            await send(message)
            if message.get("type") == "lifespan.startup.complete":
                then()

        await inner(scope, receive, sent)

    return asgi


try:  # loaded by the LiteLLM proxy
    from litellm.integrations.custom_logger import CustomLogger
except ImportError:  # imported by memoria itself, for the renderers
    CustomLogger = None

if CustomLogger is not None:

    class MemoriaHooks(CustomLogger):  # type: ignore[misc]  # LiteLLM is not in memoria's interpreter
        async def async_pre_call_hook(
            self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
        ) -> dict[str, Any]:
            return mark(_REQUEST.get(), data, call_type)

    proxy_handler = MemoriaHooks()

    async def user_api_key_auth(request: Any, api_key: str) -> Any:
        """With a master key set: that key or 401. (LiteLLM's own check answers a wrong key with 400 "No
        connected db" when, as here, there is no key database.)"""
        import os

        from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth

        master = os.environ.get("LITELLM_MASTER_KEY", "")
        # the fast path's own reading of the credentials: one for both paths
        fp = _sibling("memoria_fastpath", "proxy_fastpath.py")
        if master and fp.key_matches(request.headers.getlist("authorization"), master):
            return UserAPIKeyAuth(api_key=master, user_role=LitellmUserRoles.PROXY_ADMIN)
        raise ProxyException(
            message="Authentication Error: missing or wrong API key", type="auth_error", param="api_key", code=401
        )
