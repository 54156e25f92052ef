"""memoria's operations routes on the proxy's port: `/metrics` (Prometheus' text format) and the status page.

Copied beside the generated config as memoria_ops.py and mounted by `litellm_hooks.compose`, inside the
request guard (Host and Origin checks) and in front of the fast path, so these paths never reach LiteLLM.
What they read is what the supervisor writes: state.json (MEMORIA_STATE_FILE) with the plan, every
process's state, restarts and memory, and each worker's log. Each worker's own `/metrics` is fetched on
loopback at scrape time and relabelled with the public model name, the worker and the host; the proxy keeps
no counters of its own on the request path (it runs in several processes; vLLM counts every request).

- `GET /metrics`: every worker's vLLM metrics, then memoria's gauges (`memoria_*`).
- `GET /ui`: the status page (status_page.html, copied beside this file as memoria_status_page.html).
- `GET /ui/api/status`: the state, per-worker figures read from vLLM's metrics and the logs' last lines.
- `POST /ui/api/restart/NAME`: the same request `memoria restart NAME` makes (a file under requests/).
- `GET /ui/api/ready`: the public names this host serves now (ready, or parked and woken by a request): what a
  cluster's entry asks every couple of seconds (plugins/members.py), so it reads state.json and nothing else.
- `GET /ui/api/members`: on a cluster's entry, each member as the watch sees it (in rotation or not, and why).
- `GET /ui/api/ranks`: this host's ranks of spans (state, run, the first host's run each joined): what the
  other hosts of a span ask every couple of seconds (run/groups.py), read from state.json alone.

With a master key, every route but the page itself needs it (the page asks for it and holds it in the tab's
sessionStorage); without one, the guard has already refused anything but loopback.

The parsing and rendering are pure and need nothing but the standard library; aiohttp, which the proxy
already runs, is imported on first scrape. Never imports memoria.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STATE_ENV = "MEMORIA_STATE_FILE"
METRICS = "/metrics"
UI = "/ui"
PAGE = "memoria_status_page.html"  # beside this file; status_page.html in memoria_cli/plugins/
SOURCE_PAGE = "status_page.html"
SCRAPE_TIMEOUT = 2.0  # per worker: a stuck worker must not stall the scrape (Prometheus' default is 10 s)
LOG_LINES = 40
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text exposition format 0.0.4
# What the status page reads from each worker's metrics (vLLM 0.32, vllm/v1/metrics/loggers.py).
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
CACHE_INFO = "vllm:cache_config_info"
SUCCESS = "vllm:request_success_total"
FIGURES = tuple(f"{n}{{" for n in (RUNNING, WAITING, KV_USAGE, CACHE_INFO, SUCCESS))
STATES = (
    "starting",
    "ready",
    "unhealthy",
    "backoff",
    "fatal",
    "stopped",
    "draining",
    "sleeping",
    "waking",
)  # run/supervisor.S
REQUESTS = "requests"  # under the home: one file per asked action, `<kind>-<name>`
# the page runs only its own inline code, talks only to this origin, and is framed by nobody
CSP = (
    b"default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data: blob:; "
    b"media-src 'self' blob:; frame-ancestors 'none'"
)
REQUEST_KINDS = ("restart", "wake")
READY = UI + "/api/ready"  # plugins/members.py READY_PATH
MEMBERS = UI + "/api/members"
STATUS = UI + "/api/status"  # run/cluster_status.py asks a member this
RANKS = UI + "/api/ranks"  # run/groups.py: the other hosts of a span ask this
PARKED = ("draining", "sleeping", "waking", "stopped")  # with an idle policy: a request wakes it (hold.py)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?\s*$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# --- the text format -------------------------------------------------------------------------------------


def escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())


def with_labels(line: str, labels: dict[str, str], extra: str | None = None) -> str | None:
    """One sample line with `labels` in front of its own (its own win a clash); None if it is not a sample.
    `extra`: `labels_text(labels)`, computed once per exposition (this runs for every line of every scrape)."""
    extra = labels_text(labels) if extra is None else extra
    brace, space = line.find("{"), line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        if any(f'{k}="' in line for k in labels):  # a clash (rare): parse it properly
            m = _SAMPLE.match(line)
            if m is None or not _number(m.group(3)):
                return None
            inner = m.group(2)[1:-1].rstrip(",")
            owned = {k for k, _ in _LABEL.findall(inner)}
            extra = labels_text({k: v for k, v in labels.items() if k not in owned})
        end = line.rfind("}")
        value = line[end + 1 :].split()
        if end < brace or not value or not _number(value[0]):
            return None
        if not extra:
            return line
        return line[: brace + 1] + extra + ("," if line[brace + 1] != "}" else "") + line[brace + 1 :]
    value = line[space + 1 :].split() if space != -1 else []
    if not value or not _number(value[0]) or len(value) > 2:
        return None
    return f"{line[:space]}{{{extra}}}{line[space:]}" if extra else line


def _number(text: str) -> bool:
    try:
        float(text)  # "NaN", "+Inf" included
    except ValueError:
        return False
    return True


class Families:
    """Metric families merged from several expositions: one HELP and TYPE per family, then all its samples
    (the text format wants a family's samples together, whichever worker they came from)."""

    def __init__(self) -> None:
        self.meta: dict[str, list[str]] = {}
        self.samples: dict[str, list[str]] = {}

    def add(self, text: str, labels: dict[str, str]) -> None:
        current: str | None = None
        extra = labels_text(labels)
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                parts = line.split(" ", 3)
                if len(parts) < 3:
                    continue
                current = parts[2]
                meta = self.meta.setdefault(current, [])
                self.samples.setdefault(current, [])
                if not any(m.split(" ", 2)[1] == parts[1] for m in meta):
                    meta.append(line)
                continue
            if not line.strip() or line.startswith("#"):
                continue
            sample = with_labels(line, labels, extra)
            if sample is None:
                continue
            name = sample.split("{", 1)[0].split(" ", 1)[0]
            if current is None or not name.startswith(current):
                current = name
                self.meta.setdefault(current, [])
            self.samples.setdefault(current, []).append(sample)

    def text(self) -> str:
        out: list[str] = []
        for name, meta in self.meta.items():
            if self.samples.get(name):
                out += sorted(meta, key=lambda m: m.startswith("# TYPE"))  # HELP, then TYPE
                out += self.samples[name]
        return "\n".join(out) + "\n"


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in an exposition."""
    found = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        found.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), value))
    return found


def worker_figures(text: str) -> dict[str, float]:
    """What the status page shows of one worker's own metrics: requests running and waiting, the KV cache's
    use, requests answered, and the KV cache it actually got (vLLM's cache_config_info). Only those lines are
    parsed: this runs on every scrape."""
    figures: dict[str, float] = {}
    wanted = [ln for ln in text.splitlines() if ln.startswith(FIGURES)]
    for name, labels, value in samples("\n".join(wanted)):
        if name == RUNNING:
            figures["running"] = figures.get("running", 0.0) + value
        elif name == WAITING:
            figures["waiting"] = figures.get("waiting", 0.0) + value
        elif name == KV_USAGE:
            figures["kv_usage"] = max(figures.get("kv_usage", 0.0), value)
        elif name == SUCCESS:
            figures["answered"] = figures.get("answered", 0.0) + value
        elif name == CACHE_INFO:  # vLLM's own "KV cache size: N tokens" ("None" where it has no KV cache)
            tokens = labels.get("kv_cache_size_tokens", "")
            if tokens.isdigit():
                figures["kv_tokens"] = float(tokens)
    return figures


# --- memoria's own gauges --------------------------------------------------------------------------------


def gauge(
    out: list[str], name: str, help_: str, rows: Sequence[tuple[dict[str, str], float]], kind: str = "gauge"
) -> None:
    if not rows:
        return
    out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    for labels, value in rows:
        v = "NaN" if math.isnan(value) else repr(float(value)) if value != int(value) else str(int(value))
        out.append(f"{name}{{{labels_text(labels)}}} {v}" if labels else f"{name} {v}")


# memoria's gauges, in the order /metrics lists them: name -> (help, type)
GAUGES: dict[str, tuple[str, str]] = {
    "memoria_up": ("1 while memoria's supervisor runs the stack", "gauge"),
    "memoria_worker_state": ("the supervisor's state of each process (1 for the current one)", "gauge"),
    "memoria_worker_restarts_total": ("restarts by the supervisor since `up`", "counter"),
    "memoria_worker_scrape_up": ("1 when the worker's own /metrics answered this scrape", "gauge"),
    "memoria_worker_ready_seconds": ("seconds since the process last became ready", "gauge"),
    "memoria_worker_memory_bytes": (
        "what the process tree holds: per GPU from NVML (memory=gpu), resident on the CPU engine (memory=host)",
        "gauge",
    ),
    "memoria_worker_kv_cache_bytes": ("the KV cache the plan gives the worker", "gauge"),
    "memoria_worker_budget_bytes": ("the worker's planned memory: weights, activations, graphs, KV", "gauge"),
    "memoria_worker_weights_bytes": ("the worker's weights as planned", "gauge"),
    "memoria_worker_context_tokens": ("the context the plan gives each request (--max-model-len)", "gauge"),
    "memoria_worker_kv_cache_tokens": (
        "KV cache tokens: as planned (source=plan), as vLLM got (source=vllm)",
        "gauge",
    ),
    "memoria_worker_kv_cache_ratio": ("KV cache tokens vLLM got over those planned", "gauge"),
    "memoria_gpu_total_bytes": ("each GPU's memory", "gauge"),
    "memoria_gpu_planned_bytes": ("what the plan puts on each GPU", "gauge"),
    "memoria_gpu_free_at_plan_bytes": ("each GPU's free memory when the plan was made", "gauge"),
}


def memoria_metrics(state: dict[str, Any] | None, scraped: dict[str, dict[str, float]], host: str, now: float) -> str:
    """memoria's gauges from state.json and the scrape: the state of each worker, restarts, planned and actual
    KV cache and memory, each card's plan. `scraped`: worker -> worker_figures, for the workers that answered."""
    rows: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in GAUGES}
    if state is None:
        rows["memoria_up"].append(({"host": host}, 0))
    else:
        _collect(rows, state, scraped, host, now)
    out: list[str] = []
    for name, (help_, kind) in GAUGES.items():
        gauge(out, name, help_, rows[name], kind)
    return "\n".join(out) + "\n"


def _collect(
    rows: dict[str, list[tuple[dict[str, str], float]]],
    state: dict[str, Any],
    scraped: dict[str, dict[str, float]],
    host: str,
    now: float,
) -> None:
    procs: dict[str, Any] = state.get("processes") or {}
    plan = state.get("plan") or {}
    running = state.get("phase") in ("starting", "running")
    up = {"host": host, "profile": str(state.get("profile", "")), "engine": str(state.get("engine", ""))}
    rows["memoria_up"].append((up, 1 if running else 0))

    def who(name: str, p: dict[str, Any]) -> dict[str, str]:
        model = name if p.get("kind") != "proxy" else ""
        return {"worker": name, "model": model, "kind": str(p.get("kind", "")), "host": host}

    where = "gpu" if state.get("engine") == "cuda" else "host"
    for name, p in procs.items():
        labels = who(name, p)
        for s in STATES:
            rows["memoria_worker_state"].append(({**labels, "state": s}, 1 if p.get("state") == s else 0))
        rows["memoria_worker_restarts_total"].append((labels, float(p.get("restarts") or 0)))
        if p.get("kind") != "proxy":
            rows["memoria_worker_scrape_up"].append((labels, 1 if name in scraped else 0))
        if isinstance(p.get("memory"), (int, float)):
            rows["memoria_worker_memory_bytes"].append(({**labels, "memory": where}, float(p["memory"])))
        if p.get("state") == "ready" and isinstance(p.get("ready_at"), (int, float)):
            rows["memoria_worker_ready_seconds"].append((labels, max(0.0, now - float(p["ready_at"]))))

    for w in plan.get("workers") or []:
        if not isinstance(w, dict):
            continue
        name = str(w.get("name"))
        labels = who(name, procs.get(name) or {"kind": w.get("kind", "")})
        kv = float(w.get("kv_bytes") or 0)
        rows["memoria_worker_kv_cache_bytes"].append((labels, kv))
        rows["memoria_worker_budget_bytes"].append((labels, float(w.get("fixed") or 0) + kv))
        rows["memoria_worker_weights_bytes"].append((labels, float(w.get("weights") or 0)))
        rows["memoria_worker_context_tokens"].append((labels, float(w.get("context") or 0)))
        planned = float(w.get("kv_tokens") or 0)
        if planned:
            rows["memoria_worker_kv_cache_tokens"].append(({**labels, "source": "plan"}, planned))
        got = scraped.get(name, {}).get("kv_tokens")
        if got:
            rows["memoria_worker_kv_cache_tokens"].append(({**labels, "source": "vllm"}, got))
            if planned:
                rows["memoria_worker_kv_cache_ratio"].append((labels, got / planned))

    for d in plan.get("devices") or []:
        labels = {"device": str(d.get("index")), "name": str(d.get("name", "")), "host": host}
        rows["memoria_gpu_total_bytes"].append((labels, float(d.get("total") or 0)))
        rows["memoria_gpu_planned_bytes"].append((labels, float(d.get("planned") or 0)))
        rows["memoria_gpu_free_at_plan_bytes"].append((labels, float(d.get("free") or 0)))


# --- state and logs --------------------------------------------------------------------------------------


def read_state(path: Path | None) -> dict[str, Any] | None:
    """state.json as a dict, or None (absent, half-written by another writer, or not memoria's)."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("processes"), dict) else None


def log_tail(path: str, lines: int = LOG_LINES, limit: int = 64 * 1024) -> list[str]:
    """The last lines of a log, reading at most `limit` bytes from its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit - 1))  # one byte more: is the window's first line whole?
            data = f.read()
    except OSError:
        return []
    if size > limit:
        data = data[data.index(b"\n") + 1 :] if b"\n" in data else b""  # drop the cut line
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


def post_request(root: Path, kind: str, name: str) -> None:
    """Ask the supervisor for `kind` ("restart": `memoria restart NAME` and the page's button; "wake": a
    request held at the proxy) on NAME; it consumes the file on its next tick. Asked twice before then, it
    is one request."""
    assert kind in REQUEST_KINDS
    d = root / REQUESTS
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    (d / f"{kind}-{name}").write_text(str(time.time()))


def take_requests(root: Path, kind: str) -> list[str]:
    """The names asked for, consumed (the supervisor's side of `post_request`)."""
    d = root / REQUESTS
    names = []
    if d.is_dir():
        for f in sorted(d.glob(f"{kind}-*")):
            names.append(f.name.removeprefix(f"{kind}-"))
            f.unlink(missing_ok=True)
    return names


def serving(state: dict[str, Any] | None) -> list[str]:
    """The public names whose worker answers now, or will once a request wakes it (its idle policy parked it)."""
    plan = (state or {}).get("plan") or {}
    idle = {w.get("name"): w.get("idle", "never") for w in plan.get("workers") or () if isinstance(w, dict)}
    names = []
    for name, p in ((state or {}).get("processes") or {}).items():
        if not isinstance(p, dict) or p.get("kind") == "proxy" or p.get("rank"):
            continue  # a span's later rank serves nothing: its first host does
        s = p.get("state")
        if s == "ready" or (s in PARKED and idle.get(name, "never") != "never"):
            names.append(name)
    return sorted(names)


def ranks(state: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """This host's ranks of spans, as the other ranks' hosts watch them (run/groups.py): each one's state,
    its run, the first host's run it joined, and what its stage must run like the others."""
    out: dict[str, dict[str, Any]] = {}
    for name, p in ((state or {}).get("processes") or {}).items():
        if isinstance(p, dict) and p.get("rank") is not None:
            out[name] = {k: str(p.get(k) or "") for k in ("state", "run", "joined")}
            out[name]["flags"] = p.get("flags") or {}
    return out


def status_document(state: dict[str, Any] | None, scraped: dict[str, dict[str, float]], host: str) -> dict[str, Any]:
    """What the page draws: the state as the supervisor wrote it, each worker's live figures, its log's tail."""
    if state is None:
        return {"host": host, "state": None, "figures": {}, "logs": {}}
    procs = state.get("processes") or {}
    logs = {n: log_tail(str(p.get("log") or "")) for n, p in procs.items() if p.get("log")}
    return {"host": host, "state": state, "figures": scraped, "logs": logs, "time": time.time()}


# --- the ASGI layer --------------------------------------------------------------------------------------


class Ops:
    """ASGI app: memoria's routes (above); everything else goes to `app`."""

    def __init__(self, app: Any, state_file: Path | None, master_key: str | None, key_matches: Any) -> None:
        self.app, self.state_file, self.master = app, state_file, master_key or None
        self.key_matches = key_matches
        self.host = socket.gethostname()
        self._session: Any = None
        self.members: Any = None  # a cluster entry's plugins/members.Watcher, set by litellm_hooks.compose

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        if path != METRICS and path != UI and not path.startswith(UI + "/"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        if path in (UI, UI + "/") and method in ("GET", "HEAD"):
            return await self.page(send)
        if self.master is not None and not self.key_matches(
            [v for k, v in scope.get("headers", ()) if k == b"authorization"], self.master
        ):
            return await respond(send, 401, {"error": {"message": "missing or wrong API key", "type": "auth_error"}})
        if path == METRICS and method in ("GET", "HEAD"):
            return await self.metrics(send)
        if path == READY and method == "GET":
            return await respond(send, 200, {"host": self.host, "models": serving(read_state(self.state_file))})
        if path == RANKS and method == "GET":
            return await respond(send, 200, {"host": self.host, "ranks": ranks(read_state(self.state_file))})
        if path == MEMBERS and method == "GET":
            return await respond(send, 200, {"members": self.members.watch.report() if self.members else []})
        if path == STATUS and method == "GET":
            state = read_state(self.state_file)
            _, figures = await self.scrape(state)
            return await respond(send, 200, status_document(state, figures, self.host))
        if path.startswith(UI + "/api/restart/") and method == "POST":
            return await self.restart(path.removeprefix(UI + "/api/restart/"), send)
        await respond(
            send, 404 if method in ("GET", "POST") else 405, {"error": {"message": f"no route {method} {path}"}}
        )

    async def page(self, send: Any) -> None:
        here = Path(__file__).with_name(PAGE)
        body = (here if here.exists() else here.with_name(SOURCE_PAGE)).read_bytes()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-security-policy", CSP),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-store"),
        ]
        await raw_respond(send, 200, body, headers)

    async def metrics(self, send: Any) -> None:
        state = read_state(self.state_file)
        texts, figures = await self.scrape(state)
        fams = Families()
        for name, text in texts.items():
            fams.add(text, {"model": name, "worker": name, "host": self.host})
        body = fams.text() if texts else ""
        body += memoria_metrics(state, figures, self.host, time.time())
        await raw_respond(send, 200, body.encode(), [(b"content-type", CONTENT_TYPE), (b"cache-control", b"no-store")])

    async def scrape(self, state: dict[str, Any] | None) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
        """Each live worker's own /metrics on loopback, at once; a worker that does not answer in time is left
        out (memoria_worker_scrape_up says so). vLLM's --api-key guards only /v1, /v2, /inference and /cohere
        (vllm/entrypoints/serve/middleware/authenticate.py:11 GUARDED_PREFIX), so no worker key is needed."""
        targets = {
            n: int(p["port"])
            for n, p in ((state or {}).get("processes") or {}).items()
            if p.get("kind") != "proxy" and p.get("state") in ("ready", "unhealthy") and p.get("port")
        }
        if not targets:
            return {}, {}
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT))

        async def one(port: int) -> str | None:
            try:
                async with self._session.get(f"http://127.0.0.1:{port}/metrics") as r:
                    return await r.text() if r.status == 200 else None
            except (TimeoutError, aiohttp.ClientError, OSError):
                return None

        got = await asyncio.gather(*(one(p) for p in targets.values()))
        texts = {n: t for n, t in zip(targets, got, strict=True) if t is not None}
        return texts, {n: worker_figures(t) for n, t in texts.items()}

    async def restart(self, name: str, send: Any) -> None:
        state = read_state(self.state_file)
        procs = (state or {}).get("processes") or {}
        if self.state_file is None or name not in procs:
            return await respond(send, 404, {"error": {"message": f"no worker named {name!r}"}})
        post_request(self.state_file.parent, "restart", name)
        await respond(send, 202, {"restart": name})


async def raw_respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def respond(send: Any, status: int, obj: Any) -> None:
    await raw_respond(
        send,
        status,
        json.dumps(obj).encode(),
        [(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
    )


def ops(app: Any, key_matches: Any, environ: dict[str, str] | None = None) -> Ops:
    env = os.environ if environ is None else environ
    state = env.get(STATE_ENV)
    return Ops(app, Path(state) if state else None, env.get("LITELLM_MASTER_KEY") or None, key_matches)
