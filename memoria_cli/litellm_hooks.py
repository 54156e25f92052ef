"""memoria's plug-in for the LiteLLM proxy: transcription `response_format` text, srt and vtt as OpenAI answers them.

vLLM answers json, text (as JSON) and verbose_json only, and LiteLLM's proxy serialises every transcription
to JSON, so `response_format="srt"` would never give SRT. LiteLLM loads this file as a custom callback
(`litellm_settings.callbacks`, copied beside the generated config); its pre-call hook asks the worker for
json and notes what the client wanted; a wrapper on the proxy's own transcription route then renders that
JSON as plain text, SRT or WebVTT. Everything else passes through untouched.

With a master key, `user_api_key_auth` (general_settings.custom_auth) answers a missing or wrong key with 401.
In front of it all sits the fast path for embeddings and chat (`memoria_fastpath.py`, copied beside this file
from memoria_cli/proxy_fastpath.py).

The renderers are pure and also used by memoria's own client; this module imports LiteLLM only when LiteLLM
is what loads it.
"""

from __future__ import annotations

import contextvars
import io
import itertools
import json
import wave
from typing import Any

RENDERED = ("text", "srt", "vtt")
ROUTES = ("/v1/audio/transcriptions", "/audio/transcriptions")
_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("memoria_transcription", default=None)


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues(body: dict[str, Any], duration: float | None) -> list[tuple[float, float, str]]:
    """(start, end, text) per segment when the answer has usable ones, else one cue over the whole audio."""
    segs = [s for s in body.get("segments") or [] if str(s.get("text", "")).strip()]
    ok = segs and all(0 <= s["start"] <= s["end"] for s in segs) and all(
        a["end"] <= b["start"] + 0.01 for a, b in itertools.pairwise(segs))
    if ok:
        return [(float(s["start"]), float(s["end"]), str(s["text"]).strip()) for s in segs]
    text = str(body.get("text", "")).strip()
    end = duration or float(body.get("duration") or 0) or float((body.get("usage") or {}).get("seconds") or 0)
    return [(0.0, max(end, 0.001), text)] if text else []


def render(fmt: str, body: dict[str, Any], duration: float | None = None) -> str:
    """OpenAI's text / srt / vtt bodies from a json or verbose_json transcription."""
    if fmt == "text":
        return str(body.get("text", "")).strip() + "\n"
    if fmt == "srt":
        return "".join(f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{t}\n\n"
                       for i, (a, b, t) in enumerate(cues(body, duration), 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{t}\n\n"
                                      for a, b, t in cues(body, duration))
    raise ValueError(f"unknown format {fmt!r}")


def wav_duration(data: bytes) -> float | None:
    """Exact length of a WAV upload (the worker only reports whole seconds); None for other formats."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, ValueError):
        return None


def wrap_route(inner: Any) -> Any:
    """ASGI wrapper: run the route; if the hook marked this request, re-render its JSON answer."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        note: dict[str, Any] = {}
        token = _REQUEST.set(note)
        start: dict | None = None
        chunks: list[bytes] = []

        async def capture(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            headers = list(start.get("headers", []))
            fmt = note.get("format")
            if fmt and start["status"] == 200:
                try:
                    text = render(fmt, json.loads(body), note.get("duration")).encode()
                    ctype = b"text/plain; charset=utf-8" if fmt != "vtt" else b"text/vtt; charset=utf-8"
                    headers = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length")]
                    headers += [(b"content-type", ctype), (b"content-length", str(len(text)).encode())]
                    body = text
                except (ValueError, TypeError, KeyError, AttributeError):
                    pass  # not the JSON we expected: pass it on as it is
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        try:
            await inner(scope, receive, capture)
        finally:
            _REQUEST.reset(token)

    return app


def install(app: Any, fast_path: Any = None) -> None:
    """Put the transcription wrapper (its paths only) and, given, the fast path (`fast_path(inner)` -> ASGI app)
    in front of the app's whole middleware stack. Once per app: LiteLLM loads this file once per setting
    that names it.

    The ASGI layer, not the route table: FastAPI's included routers copy routes around, and LiteLLM loads
    callbacks during start-up, after the stack may have been built (then it is wrapped in place)."""
    if getattr(app, "__memoria_installed__", False):
        return
    app.__memoria_installed__ = True

    def front(inner: Any) -> Any:
        wrapped = wrap_route(inner)

        async def asgi(scope: dict, receive: Any, send: Any) -> None:
            if scope.get("type") == "http" and scope.get("path") in ROUTES:
                await wrapped(scope, receive, send)
            else:
                await inner(scope, receive, send)

        return asgi if fast_path is None else fast_path(asgi)

    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: front(build())
    if app.middleware_stack is not None:
        app.middleware_stack = front(app.middleware_stack)


def _sibling(name: str) -> Any:
    """A module copied beside this file (LiteLLM loads this one by path, so its folder is not importable)."""
    import importlib.util
    import sys
    from pathlib import Path

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


try:  # loaded by the LiteLLM proxy
    from litellm.integrations.custom_logger import CustomLogger
except ImportError:  # imported by memoria itself, for the renderers
    CustomLogger = None  # type: ignore[assignment,misc]

if CustomLogger is not None:

    class MemoriaHooks(CustomLogger):
        async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: str) -> dict:
            fmt = str(data.get("response_format") or "")
            note = _REQUEST.get()
            if call_type in ("transcription", "atranscription") and fmt in RENDERED and note is not None:
                note["format"] = fmt
                f = data.get("file")
                if isinstance(f, io.BytesIO):
                    note["duration"] = wav_duration(f.getvalue())
                data["response_format"] = "json"  # what every vLLM answers; rendered back on the way out
            return data

    proxy_handler = MemoriaHooks()

    async def user_api_key_auth(request: Any, api_key: str) -> Any:
        """With a master key set: that key or 401. (LiteLLM's own check answers a wrong key with 400 "No
        connected db" when, as here, there is no key database.)"""
        import hmac
        import os

        from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth

        master = os.environ.get("LITELLM_MASTER_KEY", "")
        given = (api_key or "").removeprefix("Bearer ").strip()
        if master and hmac.compare_digest(given.encode(), master.encode()):
            return UserAPIKeyAuth(api_key=given, user_role=LitellmUserRoles.PROXY_ADMIN)
        raise ProxyException(message="Authentication Error: missing or wrong API key", type="auth_error",
                             param="api_key", code=401)
    def _install() -> None:
        import os

        import litellm.proxy.proxy_server as proxy_server

        fp = _sibling("memoria_fastpath")
        fast = None
        if fp.enabled():
            key = os.environ.get("LITELLM_MASTER_KEY") or None
            fast = lambda inner: fp.FastPath(inner, lambda: proxy_server.llm_router, key)  # noqa: E731
        install(proxy_server.app, fast)

    _install()
