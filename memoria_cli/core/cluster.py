"""A cluster profile's hosts: what each runs, and what the entry routes where (pure).

Every memoria host runs `memoria up --as NAME -p cluster.yaml` and plans and supervises only its share: the
models placed on it, its proxy on its address. The entry's proxy also lists, for each public name, the other
hosts that serve it; which of them get traffic is decided live by the membership watcher inside the entry's
proxy (plugins/members.py), which reads the document `members_document` renders. memoria routes nothing
itself: LiteLLM's router (and the fast path, which reads the same router) picks among the deployments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from memoria_cli.core.errors import InputError
from memoria_cli.core.profile import Host, ModelEntry, Profile, SpanRank

WATCH_INTERVAL = 2.0  # seconds between the entry's looks at each member: out of rotation in ~2 looks
WATCH_TIMEOUT = 1.5  # a member slower than this to say it is alive counts as a miss
WATCH_MISSES = 2  # misses in a row before a member's deployments leave the router


@dataclass(frozen=True)
class Member:
    """Another host, as the entry's proxy reaches it."""

    name: str
    kind: str  # memoria | openai
    base: str  # its OpenAI API, e.g. http://10.0.0.2:8200/v1
    models: tuple[str, ...]  # the public names it serves
    key_env: str  # the variable (in the entry proxy's environment) holding the key it takes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "models": list(self.models)}


def host(profile: Profile, name: str) -> Host:
    for h in profile.hosts:
        if h.name == name:
            return h
    if not profile.hosts:
        raise InputError(f"profile {profile.name!r} has no `hosts:` section", "drop --as, or use a cluster profile")
    runs = ", ".join(h.name for h in profile.hosts if h.kind == "memoria")
    raise InputError(f"no host {name!r} in profile {profile.name!r}", f"choose one of: {runs}")


def runs(host_name: str, m: ModelEntry) -> bool:
    """Whether the host runs a process of the model: a replica (no `hosts:` means every memoria host), or a
    rank of a span."""
    if m.span is not None:
        return host_name in m.span.hosts
    return m.hosts is None or host_name in m.hosts


def serves(host_name: str, m: ModelEntry) -> bool:
    """Whether the host's proxy serves the model: of a span, only the first host (its API server's)."""
    if m.span is not None:
        return host_name == m.span.hosts[0]
    return runs(host_name, m)


def rank(profile: Profile, name: str, m: ModelEntry) -> SpanRank | None:
    """Host `name`'s part of span model `m` (of the whole cluster profile); None if it has none."""
    if m.span is None or name not in m.span.hosts:
        return None
    full = {h.name: h for h in profile.hosts}
    peers = {n: base_url(full[n], profile.proxy.port).removesuffix("/v1") for n in m.span.hosts if n != name}
    return SpanRank(
        rank=m.span.hosts.index(name),
        size=len(m.span.hosts),
        head=m.span.hosts[0],
        master=full[m.span.hosts[0]].address,
        port=m.span.port,
        address=full[name].address,
        tp=m.span.tensor_parallel,
        peers=peers,
    )


def share(profile: Profile, name: str) -> Profile:
    """What host `name` runs: its models (and its ranks of spans), its proxy on its address and port. Not
    validated again: the whole profile was, and an entry may run no model of its own (a pure router)."""
    h = host(profile, name)
    if h.kind != "memoria":
        raise InputError(f"host {name!r} is an openai host: memoria does not run it", "start memoria on a memoria host")
    models = [m for m in profile.models if runs(name, m)]
    proxy = profile.proxy.model_copy(update={"host": h.address, "port": h.port or profile.proxy.port})
    update: dict[str, Any] = {"models": models, "proxy": proxy}
    if h.worker_port_base is not None:
        update["worker_port_base"] = h.worker_port_base
    mine = profile.model_copy(update=update)
    mine._ranks = {m.name: r for m in models if (r := rank(profile, name, m)) is not None}
    return mine


def base_url(h: Host, default_port: int) -> str:
    address = f"[{h.address}]" if ":" in h.address else h.address
    path = "/v1" if h.kind == "memoria" else "/" + h.base_path.strip("/")
    return f"http://{address}:{h.port or default_port}{path}".rstrip("/")


def members(profile: Profile, name: str) -> list[Member]:
    """The hosts the entry `name` watches besides itself (none on any other host): those it routes to, and a
    host that only runs later stages of spans (it serves nothing, but `memoria status` on the entry shows it)."""
    me = host(profile, name)
    if not me.entry:
        return []
    out = []
    for h in profile.hosts:
        if h.name == name:
            continue
        if h.kind == "memoria":
            served = tuple(m.name for m in profile.models if serves(h.name, m))
            key_env = "LITELLM_MASTER_KEY"  # one key for a cluster's memoria hosts (core/proxy_config.py)
        else:
            served, key_env = tuple(h.models), h.key_env or ""
        if served or any(runs(h.name, m) for m in profile.models if h.kind == "memoria"):
            out.append(Member(h.name, h.kind, base_url(h, profile.proxy.port), served, key_env))
    return out


def members_document(profile: Profile, name: str) -> dict[str, Any]:
    """What plugins/members.py reads (members.json beside the proxy's config)."""
    return {
        "host": name,
        "interval": WATCH_INTERVAL,
        "timeout": WATCH_TIMEOUT,
        "misses": WATCH_MISSES,
        "members": [m.to_dict() for m in members(profile, name)],
    }


def placement(profile: Profile) -> dict[str, list[str]]:
    """Public name -> the hosts that serve it (memoria hosts by placement, openai hosts by their list)."""
    out: dict[str, list[str]] = {}
    for m in profile.models:
        out[m.name] = [h.name for h in profile.hosts if h.kind == "memoria" and serves(h.name, m)]
    for h in profile.hosts:
        if h.kind == "openai":
            for n in h.models:
                out.setdefault(n, []).append(h.name)
    return out


def aliases(profile: Profile) -> dict[str, str]:
    """Every alias of every model in the cluster -> its public name: the entry answers to them all, wherever
    the model runs."""
    return {a: m.name for m in profile.models for a in m.aliases}
