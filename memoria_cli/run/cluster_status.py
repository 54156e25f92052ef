"""`memoria status` on a cluster's entry: every other host, as the entry's proxy sees it and as the host says
(issue 15). Thin: reads members.json (what the entry's proxy watches), asks the entry's own proxy which are
in rotation, and asks each member for its processes, all at once with a short timeout so a host that is down
costs two seconds, not a hang."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from memoria_cli.core.proxy_config import MASTER_KEY_ENV
from memoria_cli.plugins.members import root_of
from memoria_cli.plugins.ops import MEMBERS, STATUS

TIMEOUT = 2.0  # seconds: a member slower than this is shown as unreachable


@dataclass(frozen=True)
class HostView:
    """One other host: where it is, whether the entry routes to it, and what it runs."""

    name: str
    kind: str  # memoria | openai
    base: str
    rotation: str  # "in", "out: why", or "unknown" (the entry's proxy did not say)
    workers: dict[str, str] = field(default_factory=dict)  # name -> state (an openai host: model -> "listed")
    error: str = ""  # why `workers` is not known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_members(members_file: Path) -> list[dict[str, Any]] | None:
    """The members the entry's proxy watches, or None when this home is not a cluster's entry."""
    try:
        doc = json.loads(members_file.read_text())
    except (OSError, ValueError):
        return None
    members = doc.get("members") if isinstance(doc, dict) else None
    return members if isinstance(members, list) else None


def rotation_of(report: dict[str, Any] | None) -> str:
    if report is None:
        return "unknown"
    return "in" if report.get("in") else "out" + (f": {report['why']}" if report.get("why") else "")


def workers_of(member: dict[str, Any], body: dict[str, Any]) -> dict[str, str]:
    """A memoria host's processes from its /ui/api/status (its proxy left out: that it answered says enough);
    an openai host's listed models that its /models names."""
    if member.get("kind") == "openai":
        names = {m.get("id") for m in body.get("data") or [] if isinstance(m, dict)}
        return {n: "listed" if n in names else "missing" for n in member.get("models") or []}
    procs = ((body.get("state") or {}).get("processes")) or {}
    return {n: str(p.get("state")) for n, p in procs.items() if p.get("kind") != "proxy"}


def hosts_view(members: list[dict[str, Any]], entry_url: str, environ: dict[str, str]) -> list[HostView]:
    """Every member as the entry sees it now."""

    def key_header(var: str) -> dict[str, str]:
        key = environ.get(var or MASTER_KEY_ENV, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def get(url: str, var: str) -> tuple[dict[str, Any] | None, str]:
        try:
            r = httpx.get(url, headers=key_header(var), timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            return None, f"unreachable ({type(exc).__name__})"
        if r.status_code == 401:
            return None, f"key refused: set {var or MASTER_KEY_ENV} to the cluster's key"
        if r.status_code != 200:
            return None, f"answered {r.status_code}"
        try:
            body = r.json()
        except ValueError:
            return None, "answered something that is not JSON"
        return (body, "") if isinstance(body, dict) else (None, "answered something unexpected")

    def one(m: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        url = m["base"].rstrip("/") + "/models" if m.get("kind") == "openai" else root_of(m["base"]) + STATUS
        return get(url, str(m.get("key_env") or ""))

    with ThreadPoolExecutor(len(members) + 1) as pool:
        rotation = pool.submit(get, root_of(entry_url) + MEMBERS, MASTER_KEY_ENV)
        looks = list(pool.map(one, members))
    reports = {r.get("name"): r for r in (rotation.result()[0] or {}).get("members", [])}
    out = []
    for m, (body, error) in zip(members, looks, strict=True):
        out.append(
            HostView(
                name=m["name"],
                kind=m.get("kind", "memoria"),
                base=m["base"],
                rotation=rotation_of(reports.get(m["name"])),
                workers=workers_of(m, body) if body is not None else {},
                error=error,
            )
        )
    return out
