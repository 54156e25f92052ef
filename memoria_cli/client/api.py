"""The HTTP client of the client commands: where the endpoint is, the calls, and errors as one clear line.

httpx with an injectable transport (tests give a stand-in); SSE streams parsed here, so a cut stream is
noticed and named instead of ending silently.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from memoria_cli.core.errors import InputError, ServerError
from memoria_cli.core.units import REQUEST_TIMEOUT

if TYPE_CHECKING:
    from memoria_cli.run.state import RunState

DEFAULT_URL = "http://127.0.0.1:8200/v1"


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    source: str  # where it came from, for error messages


def resolve_endpoint(
    base_url: str | None = None,
    api_key: str | None = None,
    environ: dict[str, str] | None = None,
    state: RunState | None = None,
) -> Endpoint:
    """Flags, else MEMORIA_*, else OPENAI_*, else the running stack's own address, else the default."""
    env = dict(os.environ) if environ is None else environ
    key = api_key or env.get("MEMORIA_API_KEY") or env.get("OPENAI_API_KEY") or "not-needed"
    if base_url:
        return _checked(Endpoint(base_url.rstrip("/"), key, "--base-url"))
    for var in ("MEMORIA_BASE_URL", "OPENAI_API_BASE", "OPENAI_BASE_URL"):
        if env.get(var):
            return _checked(Endpoint(env[var].rstrip("/"), key, var))
    if state and state.url:
        return _checked(Endpoint(state.url.rstrip("/"), key, "the running memoria"))
    return Endpoint(DEFAULT_URL, key, "the default")


def _checked(ep: Endpoint) -> Endpoint:
    """An http(s) URL with a host, or one line saying which setting is wrong."""
    try:
        url = httpx.URL(ep.base_url)
        ok = url.scheme in ("http", "https") and bool(url.host)
    except (httpx.InvalidURL, ValueError, TypeError):
        ok = False
    if not ok:
        raise InputError(
            f"{ep.source} {ep.base_url[:200]!r} is not an http(s) URL", "write it like http://127.0.0.1:8200/v1"
        )
    if any(c in ep.api_key for c in "\r\n") or not ep.api_key.isprintable():
        raise InputError("the API key has control characters in it", "check MEMORIA_API_KEY / OPENAI_API_KEY")
    return ep


def running_state() -> RunState | None:
    from memoria_cli.core.home import Home
    from memoria_cli.run.state import read_state

    state, _ = read_state(Home.from_env().state_file)
    return state


@contextlib.contextmanager
def request_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """Threads for requests in flight. On Ctrl-C or SIGTERM nothing waits for them (a request may take the
    whole --timeout): queued ones are cancelled and the caller's clean-up runs at once; app.main then exits
    without joining the threads."""
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class Api:
    def __init__(
        self, endpoint: Endpoint, timeout: float = REQUEST_TIMEOUT, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.endpoint = endpoint
        self.http = httpx.Client(
            base_url=endpoint.base_url + "/",
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers={"Authorization": f"Bearer {endpoint.api_key}"},
            transport=transport,
            trust_env=False,
        )

    # ---- errors
    def _unreachable(self, exc: Exception) -> ServerError:
        return ServerError(
            f"cannot reach {self.endpoint.base_url} ({self.endpoint.source}): {type(exc).__name__}",
            "is memoria running? `memoria status`, `memoria up -d`, or give --base-url",
        )

    @staticmethod
    def _server_error(resp: httpx.Response) -> ServerError:
        try:
            body = resp.json()
            msg = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("detail")
            msg = msg or json.dumps(body)[:300]
        except (ValueError, AttributeError):
            msg = resp.text[:300]
        msg = " ".join(str(msg).split())[:400]
        hint = {
            401: "set MEMORIA_API_KEY (or --api-key) to the proxy's key",
            404: "check the model name with `memoria models`",
        }.get(resp.status_code, "see `memoria logs proxy`")
        return ServerError(f"the server answered {resp.status_code}: {msg}", hint)

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise ServerError(
                f"no answer from {self.endpoint.base_url} in time ({type(exc).__name__})",
                "raise --timeout, or check `memoria status`",
            ) from None
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if resp.status_code >= 400:
            raise self._server_error(resp)
        return resp

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self._request("POST", path, json=body)
        try:
            data = resp.json()
        except ValueError:
            raise ServerError(f"the server's answer to {path} is not JSON", "see `memoria logs proxy`") from None
        if not isinstance(data, dict):
            raise ServerError(f"the server's answer to {path} is not a JSON object", "see `memoria logs proxy`")
        return data

    # ---- calls
    def models(self) -> list[str]:
        data = self._request("GET", "models").json().get("data", [])
        return [m["id"] for m in data]

    def check_model(self, model: str, known: list[str] | None = None) -> str:
        """Refuse an unknown model before sending anything, with a "did you mean" for near misses."""
        known = self.models() if known is None else known
        if model in known:
            return model
        close = difflib.get_close_matches(model, known, n=1, cutoff=0.5)
        raise InputError(
            f"unknown model {model!r}", f"did you mean {close[0]!r}?" if close else "served: " + ", ".join(known)
        )

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Server-sent events of a streamed call; a stream that ends without [DONE] is an error."""
        try:
            with self.http.stream("POST", path, json={**body, "stream": True}) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise self._server_error(resp)
                done = False
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        yield json.loads(data)
                    except ValueError:
                        raise ServerError(
                            "the stream carried something that is not JSON", "see `memoria logs proxy`"
                        ) from None
                if not done:
                    raise ServerError("the stream was cut before it ended", "try again; `memoria status` shows why")
        except httpx.TimeoutException:
            raise ServerError("the stream stalled (timeout)", "raise --timeout, or check `memoria status`") from None
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.RemoteProtocolError):
                raise ServerError(
                    "the stream was cut before it ended", "try again; `memoria status` shows why"
                ) from None
            raise self._unreachable(exc) from None

    def transcribe(self, filename: str, data: bytes, fields: dict[str, str]) -> httpx.Response:
        return self._request("POST", "audio/transcriptions", files={"file": (filename, data)}, data=fields)


def default_model(kind: str, state: RunState | None) -> str:
    """The running profile's model of this kind."""
    for name, p in (state.processes if state else {}).items():
        if p.kind == kind:
            return name
    raise InputError(f"no {kind} model known", "give one with -m (see `memoria models`)")
