"""Requests for a parked model, held at the proxy while it wakes (idle policies: run/supervisor.py parks them).

A worker with `idle:` in its profile parks after a while without requests: asleep in vLLM, or stopped. A
request for it through the proxy is held here while the supervisor wakes it. This layer sits in front of the
fast path and LiteLLM's path alike, so every route that names a model is held: embeddings, chat, legacy
completions, transcriptions (the model is a form field there) and images in chat. The first held request
asks for the wake (a file under the home's requests/, `ops.post_request`); the rest of a burst find it
asked for, so a burst makes one wake. When the worker is ready the request goes on, and its answer carries
`x-memoria-held: <seconds>`. Past the model's `hold` seconds it gets 503 with Retry-After instead.

Nothing else wakes a model: not LiteLLM's /health (its calls go to the workers directly, not through here),
not /v1/models or /metrics, not a request without the key. A client that leaves stops waiting.

The state comes from state.json, read again when it changes (one stat per request). While every parkable
worker is awake a request passes without its body being read. Copied beside the proxy's config as
memoria_hold.py; never imports memoria (the modules it needs are handed in by litellm_hooks.compose).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from pathlib import Path
from typing import Any

ROUTES = frozenset(
    f"{v}/{r}" for v in ("", "/v1") for r in ("embeddings", "chat/completions", "completions", "audio/transcriptions")
)
AWAKE = frozenset({"ready", "unhealthy"})
POLL = 0.1  # seconds between looks at the state while held
ASK_AGAIN = 5.0  # a held request asks for the wake again this often (the supervisor may have restarted)
RETRY_AFTER = 10  # seconds, in the 503 of a request held past its model's `hold`
HEADER = b"x-memoria-held"


class Parked:
    """The parkable workers as state.json has them: public names -> worker, each one's state and hold."""

    def __init__(self, state: dict[str, Any] | None) -> None:
        self.names: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.holds: dict[str, float] = {}
        plan = (state or {}).get("plan") or {}
        planned = {w.get("name"): w for w in plan.get("workers") or () if isinstance(w, dict)}
        for name, p in ((state or {}).get("processes") or {}).items():
            w = planned.get(name)
            if not isinstance(p, dict) or not w or w.get("idle", "never") == "never":
                continue
            self.states[name] = str(p.get("state", ""))
            self.holds[name] = float(w.get("hold") or 0.0)
            for n in [name, *(p.get("aliases") or [])]:
                self.names[str(n)] = name
        self.all_awake = all(s in AWAKE for s in self.states.values())


def model_of(raw: bytes, content_type: bytes, transcripts: Any) -> str | None:
    """The `model` a request names: a JSON body's key, or a multipart form's field."""
    if content_type.lower().startswith(b"multipart/form-data"):
        got = transcripts.form_field(raw, content_type, "model")
        return got if isinstance(got, str) else None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def unavailable(name: str, waited: float) -> str:
    return (
        f"{name} is waking up (it was parked while idle) and was not ready after {waited:.0f} s: retry in a "
        f"little while (`memoria status` shows it; its profile's idle.hold sets how long requests wait)"
    )


class Hold:
    """ASGI app: `app` with requests for parked workers held until they are awake.
    `fp`, `ops`, `transcripts`: memoria_fastpath, memoria_ops and memoria_transcripts."""

    def __init__(self, app: Any, state_file: Path | None, master: str | None, fp: Any, ops: Any, transcripts: Any):
        self.app, self.state_file, self.master = app, state_file, master or None
        self.fp, self.ops, self.transcripts = fp, ops, transcripts
        self._seen: int | None = None
        self._parked = Parked(None)

    def parked(self) -> Parked:
        if self.state_file is None:
            return self._parked
        try:
            stamp = os.stat(self.state_file).st_mtime_ns
        except OSError:
            return self._parked
        if stamp != self._seen and (state := self.ops.read_state(self.state_file)) is not None:
            self._seen, self._parked = stamp, Parked(state)
        return self._parked

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or scope.get("path") not in ROUTES:
            await self.app(scope, receive, send)
            return
        parked = self.parked()
        headers = scope.get("headers", ())
        if parked.all_awake or (
            self.master and not self.fp.key_matches([v for k, v in headers if k == b"authorization"], self.master)
        ):
            await self.app(scope, receive, send)  # nothing parked; or LiteLLM answers 401, and nothing wakes
            return
        raw = await self.fp.read_body(receive)
        ctype = next((v for k, v in headers if k == b"content-type"), b"")
        worker = parked.names.get(model_of(raw, ctype, self.transcripts) or "")
        if worker is None or parked.states.get(worker) in AWAKE:
            await self.app(scope, self.fp.replay(raw, receive), send)
            return
        started = time.monotonic()
        outcome = await self.wait(worker, parked.holds.get(worker, 0.0), receive)
        waited = time.monotonic() - started
        if outcome == "gone":
            return  # the client left: nothing is owed to anyone
        if outcome == "timeout":
            retry = ((b"retry-after", str(RETRY_AFTER).encode()),)
            await self.fp.BodyLimit.refuse(send, 503, unavailable(worker, waited), "service_unavailable", retry)
            return
        await self.app(scope, self.fp.replay(raw, receive), with_header(send, waited))

    async def wait(self, worker: str, hold: float, receive: Any) -> str:
        """ "ready" (or "failed": FATAL, or gone from the state; LiteLLM then words the error), "timeout",
        or "gone" when the client disconnects."""
        assert self.state_file is not None
        start, asked = time.monotonic(), -math.inf
        gone = asyncio.ensure_future(self.fp.wait_disconnect(receive))
        try:
            while True:
                state = self.parked().states.get(worker)
                if state in AWAKE:
                    return "ready"
                if state is None or state == "fatal":
                    return "failed"
                now = time.monotonic()
                if now - start >= hold:
                    return "timeout"
                if now - asked >= ASK_AGAIN:
                    self.ops.post_request(self.state_file.parent, "wake", worker)
                    asked = now
                done, _ = await asyncio.wait({gone}, timeout=POLL)
                if done:
                    return "gone"
        finally:
            if not gone.done():
                gone.cancel()
            await asyncio.gather(gone, return_exceptions=True)


def with_header(send: Any, waited: float) -> Any:
    """`send` with how long the request was held on its answer."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (HEADER, f"{waited:.2f}".encode())]}
        await send(message)

    return sending


def hold(app: Any, fp: Any, ops: Any, transcripts: Any, environ: dict[str, str] | None = None) -> Hold:
    env = os.environ if environ is None else environ
    state = env.get(ops.STATE_ENV)
    return Hold(app, Path(state) if state else None, env.get("LITELLM_MASTER_KEY"), fp, ops, transcripts)
