"""The entry's membership watcher: which other hosts of a cluster get traffic, kept true in LiteLLM's live router.

Copied beside the generated config as memoria_members.py and started by `litellm_hooks.compose` when the
proxy's start-up is over (MEMORIA_MEMBERS_FILE names members.json, written from core/cluster.py). Every
`interval` seconds it asks each member, at once, what it serves:

- a memoria host: `GET /ui/api/ready` with the cluster's key (plugins/ops.py): the public names whose workers
  are ready or parked there. Before a member is first admitted (and again after it was out) it must also
  answer 401 to the same request without a key: a host that does not ask for the key is not admitted.
- an openai host: `GET <base>/models` with its key: the listed ids that the profile says it serves.

What a member serves becomes one deployment per public name in the router (`upsert_deployment`, an id of
memoria's own: `memoria-member:<host>:<name>`); `misses` failed looks in a row, or a name it no longer
serves, delete it (`delete_deployment`). No restart, no database, and nothing else to keep in step: the fast
path picks from the same router, and evicts a member on a failed connection itself (proxy_fastpath.py), which
the next good look undoes. Why not LiteLLM's own health checks and cooldowns: in the pinned 1.108.7 a
connection failure never puts a deployment in cooldown (upstream issue 27362), `allowed_fails_policy` turns
the health-check routing filter off, and background health checks send real inference requests.

Standard library only (aiohttp, which the proxy runs, is imported when the watch starts); never imports
memoria. `Watch.looked` is pure: the tests drive it with made-up looks and a stand-in router.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV = "MEMORIA_MEMBERS_FILE"
ID_PREFIX = "memoria-member:"  # proxy_fastpath.py reads it: a member's deployment, evicted on a failed connection
READY_PATH = "/ui/api/ready"  # plugins/ops.py READY
KEY_ENV = "LITELLM_MASTER_KEY"


def deployment_id(host: str, name: str) -> str:
    return f"{ID_PREFIX}{host}:{name}"


@dataclass
class Look:
    """One look at a member: what it serves now (None: it did not answer as it should), and why not."""

    serves: frozenset[str] | None
    why: str = ""
    guarded: bool | None = None  # a memoria member's answer without the key was 401 (None: not asked)


@dataclass
class Seen:
    misses: int = 0
    admitted: bool = False
    serving: frozenset[str] = frozenset()
    why: str = "not looked at yet"
    since: float = 0.0  # when it last went in or out


@dataclass
class Watch:
    """The members and what the router holds for each; `looked` turns looks into router changes."""

    members: list[dict[str, Any]]
    misses: int = 2
    seen: dict[str, Seen] = field(default_factory=dict)
    gaps: dict[str, list[str]] = field(default_factory=dict)  # `unserved`, as of the last look

    def __post_init__(self) -> None:
        for m in self.members:
            self.seen.setdefault(m["name"], Seen())
        self.gaps = self._gaps()

    def needs_guard_check(self, name: str) -> bool:
        m = self.member(name)
        return m["kind"] == "memoria" and not self.seen[name].admitted

    def member(self, name: str) -> dict[str, Any]:
        return next(m for m in self.members if m["name"] == name)

    def looked(self, name: str, look: Look, now: float) -> tuple[list[str], list[str]]:
        """(names to put in the router, names to take out) for member `name` after `look`."""
        try:
            return self._looked(name, look, now)
        finally:
            self.gaps = self._gaps()

    def _looked(self, name: str, look: Look, now: float) -> tuple[list[str], list[str]]:
        m, s = self.member(name), self.seen[name]
        if look.serves is not None and look.guarded is False:
            look = Look(None, "it answers without the cluster's key: not admitted")
            s.misses = self.misses  # not a slow host: out at once
        if look.serves is None:
            s.misses += 1
            s.why = look.why
            if s.misses < self.misses or not s.admitted:
                return [], []
            gone, s.serving, s.admitted, s.since = sorted(s.serving), frozenset(), False, now
            return [], gone
        wanted = frozenset(look.serves) & frozenset(m["models"])
        if not s.admitted:
            s.admitted, s.since = True, now
        add = sorted(wanted)  # upsert is a no-op for what is there; the fast path may have evicted it since
        drop = sorted(s.serving - wanted)
        s.misses, s.serving, s.why = 0, wanted, ""
        return add, drop

    def unserved(self) -> dict[str, list[str]]:
        """The names members should serve that no member in rotation serves now -> those members (all out, or
        none of them has it ready: a span between two starts). Kept from the last look: read per request."""
        return self.gaps

    def _gaps(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in self.members:
            for name in m["models"]:
                out.setdefault(name, []).append(m["name"])
        return {
            n: hosts
            for n, hosts in out.items()
            if not any(self.seen[h].admitted and n in self.seen[h].serving for h in hosts)
        }

    def report(self) -> list[dict[str, Any]]:
        """What /ui/api/members shows (plugins/ops.py)."""
        return [
            {
                "name": m["name"],
                "kind": m["kind"],
                "base": m["base"],
                "in": self.seen[m["name"]].admitted,
                "serving": sorted(self.seen[m["name"]].serving),
                "why": self.seen[m["name"]].why,
                "since": self.seen[m["name"]].since,
            }
            for m in self.members
        ]


def deployment(member: dict[str, Any], name: str, key: str | None) -> dict[str, Any]:
    """A member's deployment of `name`, as LiteLLM's config would list it: vLLM's OpenAI dialect (a memoria
    host's proxy speaks it, with `reasoning_content`), the key held only in memory."""
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"hosted_vllm/{name}",
            "api_base": member["base"],
            "api_key": key or "none",
        },
        "model_info": {"id": deployment_id(member["name"], name), "memoria_member": member["name"]},
    }


def read_document(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("members"), list) else None


def root_of(base: str) -> str:
    """http://h:8200/v1 -> http://h:8200 (a memoria host's own routes are beside its API)."""
    return base[: -len("/v1")] if base.endswith("/v1") else base


class Watcher:
    """The loop in the proxy's event loop: look, then change the router."""

    def __init__(self, doc: dict[str, Any], router: Any, environ: Any = None) -> None:
        self.env = os.environ if environ is None else environ
        self.doc, self.router = doc, router
        self.watch = Watch(list(doc["members"]), int(doc.get("misses", 2)))
        self.interval = float(doc.get("interval", 2.0))
        self.timeout = float(doc.get("timeout", 1.5))
        self.session: Any = None
        self.task: asyncio.Task[None] | None = None

    def key_of(self, member: dict[str, Any]) -> str | None:
        var = member.get("key_env") or ""
        return self.env.get(var) or None if var else None

    async def look(self, member: dict[str, Any]) -> Look:
        import aiohttp

        key = self.key_of(member)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        memoria = member["kind"] == "memoria"
        url = root_of(member["base"]) + READY_PATH if memoria else member["base"].rstrip("/") + "/models"
        try:
            async with self.session.get(url, headers=headers) as r:
                if r.status != 200:
                    return Look(None, f"{url} answered {r.status}")
                body = await r.json(content_type=None)
            if memoria:
                serves = frozenset(str(n) for n in body.get("models", ()))
            else:
                serves = frozenset(str(d.get("id")) for d in body.get("data", ()) if isinstance(d, dict))
            guarded = None
            if self.watch.needs_guard_check(member["name"]):
                async with self.session.get(url) as bare:
                    guarded = bare.status == 401
            return Look(serves, guarded=guarded)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, AttributeError) as exc:
            return Look(None, f"{url}: {type(exc).__name__} {exc}".strip())

    def apply(self, member: dict[str, Any], add: list[str], drop: list[str]) -> None:
        router = self.router()
        if router is None:
            return
        from litellm.types.router import Deployment

        key = self.key_of(member)
        for name in add:
            router.upsert_deployment(Deployment(**deployment(member, name, key)))
        for name in drop:
            router.delete_deployment(id=deployment_id(member["name"], name))

    async def once(self) -> None:
        looks = await asyncio.gather(*(self.look(m) for m in self.watch.members))
        now = time.time()
        for m, look in zip(self.watch.members, looks, strict=True):
            add, drop = self.watch.looked(m["name"], look, now)
            if add or drop:
                self.apply(m, add, drop)
            if drop:
                print(f"memoria: member {m['name']} out of rotation for {', '.join(drop)}: {look.why}", flush=True)

    async def run(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.once()
                except Exception as exc:  # a bug here must not stop the watch: say it, look again
                    print(f"memoria: member watch failed: {type(exc).__name__}: {exc}", flush=True)
                await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))
        finally:
            await self.session.close()

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())


RETRY_AFTER = 10  # seconds, in the 503 of a request for a name no host serves now


def aliased(router: Any, model: str) -> str:
    """The public name an alias stands for in LiteLLM's router (`model_group_alias`), else `model`."""
    alias = (getattr(router, "model_group_alias", None) or {}).get(model)
    if isinstance(alias, dict):
        alias = alias.get("model")
    return alias if isinstance(alias, str) else model


class Unserved:
    """ASGI app: on a cluster's entry, a request for a name that only other hosts serve, while none of them
    serves it (all out of rotation, or a span between two starts), is answered here: 503 with Retry-After,
    naming the hosts. LiteLLM would answer 400 "invalid model name" of a name that is right. A request
    passes untouched (its body unread) while every name is served; without the key it goes on to LiteLLM's
    401. `fp`: memoria_fastpath; `model_of(raw, content_type)`: the name a body asks for (plugins/hold.py)."""

    def __init__(self, app: Any, watcher: Watcher, fp: Any, model_of: Any, routes: frozenset[str]) -> None:
        self.app, self.watcher, self.fp, self.model_of, self.routes = app, watcher, fp, model_of, routes
        self.master = watcher.env.get(KEY_ENV) or None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        gaps = self.watcher.watch.unserved()
        headers = scope.get("headers", ())
        if (
            not gaps
            or scope.get("type") != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in self.routes
            or (self.master and not self.fp.key_matches([v for k, v in headers if k == b"authorization"], self.master))
        ):
            await self.app(scope, receive, send)
            return
        raw = await self.fp.read_body(receive)
        router = self.watcher.router()
        model = self.model_of(raw, next((v for k, v in headers if k == b"content-type"), b""))
        name = aliased(router, model) if isinstance(model, str) else None
        if name in gaps and router is not None and not router.get_model_list(model_name=name):
            message = (
                f"no host serves {name} right now ({', '.join(gaps[name])}: out of rotation, or starting it): "
                f"retry in a little while (`memoria status` on the entry shows why)"
            )
            retry = ((b"retry-after", str(RETRY_AFTER).encode()),)
            await self.fp.BodyLimit.refuse(send, 503, message, "service_unavailable", retry)
            return
        await self.app(scope, self.fp.replay(raw, receive), send)


def watcher(router: Any, environ: Any = None) -> Watcher | None:
    """The watch this proxy runs, if it is a cluster's entry."""
    env = os.environ if environ is None else environ
    doc = read_document(env.get(ENV))
    return Watcher(doc, router, env) if doc and doc["members"] else None
