"""What `up` will run, computed before anything starts (so a bad plan launches nothing), and the checks and
files it needs before the supervisor takes over."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from memoria_cli.core import cluster
from memoria_cli.core.errors import InputError, PreflightError
from memoria_cli.core.home import Home
from memoria_cli.core.inventory import Inventory, inventory_for
from memoria_cli.core.model_facts import read_facts
from memoria_cli.core.plan import Plan
from memoria_cli.core.planner import plan
from memoria_cli.core.profile import Profile, load_profile
from memoria_cli.core.proxy_config import MASTER_KEY_ENV, auth_env, render, worker_key_env, worker_keys
from memoria_cli.core.worker_spec import LAUNCHER, PROXY, RANK, ProcessSpec, proxy_spec, worker_spec
from memoria_cli.run import processes
from memoria_cli.run.files import copy_plugin, plugin_text, write_atomic
from memoria_cli.run.runtimes import Runtimes
from memoria_cli.run.state import read_state, supervisor_alive
from memoria_cli.run.supervisor import Group

# What LiteLLM loads from beside its config: name there -> file in memoria_cli/plugins/.
PROXY_PLUGINS = {
    "memoria_hooks.py": "litellm_hooks.py",
    "memoria_fastpath.py": "proxy_fastpath.py",
    "memoria_transcripts.py": "transcripts.py",
    "memoria_ops.py": "ops.py",
    "memoria_hold.py": "hold.py",
    "memoria_members.py": "members.py",
    "memoria_status_page.html": "status_page.html",
    LAUNCHER: "proxy_launcher.py",
}
MEMBERS_FILE = "members.json"  # beside the proxy's config, on a cluster's entry: plugins/members.py reads it
MEMBERS_ENV = "MEMORIA_MEMBERS_FILE"
VLLM_SITE = {"sitecustomize.py": "vllm_hooks.py"}  # what a CPU worker's PYTHONPATH loads at start-up


@dataclass
class Stack:
    home: Home
    profile: Profile
    plan: Plan
    workers: list[ProcessSpec]
    proxy: ProcessSpec
    proxy_config: dict[str, Any]
    auth: bool
    proxy_env: dict[str, str] = field(repr=False)  # may hold the master key: never logged, never in argv
    worker_keys: dict[str, str] = field(default_factory=dict, repr=False)  # name -> its VLLM_API_KEY (with auth)
    host: str | None = None  # a cluster host's name (`up --as`)
    members: dict[str, Any] | None = None  # on a cluster's entry: what its proxy watches (core/cluster.py)
    groups: dict[str, Group] = field(default_factory=dict)  # this host's ranks of spans
    peers: dict[str, dict[str, str]] = field(default_factory=dict)  # span -> its other hosts' memoria (base URL)

    @property
    def url(self) -> str:
        return f"http://{self.plan.proxy_host}:{self.plan.proxy_port}/v1"


def make_plan(profile: Profile, gpus: str | None) -> tuple[Inventory, Plan]:
    inv = inventory_for(gpus)
    facts = {m.name: read_facts(m) for m in profile.models}
    return inv, plan(profile, inv, facts)


def specs_for(the_plan: Plan, profile: Profile, vllm_exe: str, home: Home) -> list[ProcessSpec]:
    """Every worker's spec, logging and caching under `home`."""
    return [
        worker_spec(w, profile.model(w.name), vllm_exe, home.log_for(w.name), home.marker, home.cache, home.vllm_site)
        for w in the_plan.workers
    ]


def profile_for(profile_name: str, as_host: str | None) -> tuple[Profile, Profile]:
    """(the profile as written, what this host runs): the same profile, or a cluster host's share."""
    full = load_profile(profile_name)
    if as_host is None and full.hosts:
        runs = ", ".join(h.name for h in full.hosts if h.kind == "memoria")
        raise InputError(f"profile {full.name!r} describes a cluster", f"say which host this is: --as NAME ({runs})")
    return full, cluster.share(full, as_host) if as_host else full


def prepare(
    home: Home, profile_name: str, gpus: str | None = None, given: Plan | None = None, as_host: str | None = None
) -> Stack:
    """The whole stack from a profile: planned here, or `given` (the plan `up` showed, handed to its detached
    supervisor so that the plan shown is the plan run). `as_host`: this host's share of a cluster profile."""
    full, profile = profile_for(profile_name, as_host)
    the_plan = given if given is not None else make_plan(profile, gpus)[1]
    vllm, litellm = Runtimes(home.runtimes).require()
    auth, env = auth_env(profile.proxy.host)
    is_entry = as_host is not None and cluster.host(full, as_host).entry  # the other hosts route nothing
    members = cluster.members_document(full, as_host) if as_host and is_entry else None
    if as_host and not auth:  # a member answers the entry only with the key; the entry presents the same one
        raise PreflightError(
            "a cluster's hosts need a key, and this one has none",
            f"set {MASTER_KEY_ENV} to the same secret on every host of the cluster (in the environment)",
        )
    for m in (members or {}).get("members", []):
        var = m["key_env"]
        if var and var != MASTER_KEY_ENV:  # an openai host's own key, from this environment to the proxy's
            if not os.environ.get(var):
                raise PreflightError(f"host {m['name']}'s key variable {var} is not set", f"export {var}=...")
            env[var] = os.environ[var]
    if members is not None:
        env[MEMBERS_ENV] = str(home.proxy_config.with_name(MEMBERS_FILE))
    env["MEMORIA_LOOPBACK_ONLY"] = "0" if auth else "1"  # proxy_fastpath.RequestGuard: Host checked without a key
    keys = worker_keys(the_plan) if auth else {}
    for i, w in enumerate(the_plan.workers):
        if w.name in keys:
            env[worker_key_env(i)] = keys[w.name]
    specs = specs_for(the_plan, profile, vllm, home)
    ranks = {w.name: r for w in the_plan.workers if (r := profile.rank_of(w.name)) is not None}
    if ranks:
        specs = [span_interface(s, ranks[s.name].address) if s.name in ranks else s for s in specs]
    proxy = proxy_spec(the_plan, litellm, home.proxy_config, home.log_for(PROXY), home.marker, home.state_file)
    return Stack(
        home=home,
        profile=profile,
        plan=the_plan,
        workers=specs,
        proxy=proxy,
        proxy_config=render(the_plan, profile, auth, aliases=cluster.aliases(full) if as_host else None),
        auth=auth,
        proxy_env=env,
        worker_keys=keys,
        host=as_host,
        members=members,
        groups={n: Group(r.rank, r.head, the_plan.worker(n).stage_flags) for n, r in ranks.items()},
        peers={n: r.peers for n, r in ranks.items()},
    )


SPAN_IFNAME_ENV = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def span_interface(spec: ProcessSpec, address: str) -> ProcessSpec:
    """A span's rank talks to the others on this host's cluster address. Gloo (the CPU build's backend, and
    vLLM's CPU-side groups on CUDA) otherwise takes the address the hostname resolves to, often 127.0.1.1 or
    127.0.0.1 (Debian's /etc/hosts), and the other ranks are refused there (seen here across namespaces);
    NCCL picks an interface by its own rules. Both are told the interface that holds the address, unless the
    profile's `env` names one."""
    iface = processes.interface_of(address)
    if iface is None:
        raise PreflightError(
            f"this machine has no network interface with address {address}, where {spec.name}'s other hosts "
            "will look for it",
            "check `--as` and this host's `address` in the profile",
        )
    env = {**{k: iface for k in SPAN_IFNAME_ENV}, **spec.env}
    return replace(spec, env=env)


def preflight(stack: Stack) -> list[str]:
    """Refuse before anything starts: leftovers of a dead run are swept (they are ours), ports must be free."""
    notes = []
    state, note = read_state(stack.home.state_file)
    if note:
        notes.append(note)
    if not supervisor_alive(state):
        left = processes.sweep(stack.home.marker)
        if left:
            notes.append(f"stopped {len(left)} process(es) left by a previous run that did not stop cleanly")
    wanted = [
        (spec.port, stack.plan.proxy_host if spec.role == "proxy" else "127.0.0.1", spec.name, spec.role)
        for spec in [*stack.workers, stack.proxy]
        if spec.role != RANK  # a headless rank opens no API port
    ]
    # a span's rendezvous, on its first host (torch's store listens on every address there)
    wanted += [
        (w.master_port, w.master_addr, w.name, "span")
        for w in stack.plan.workers
        if w.pipeline_parallel > 1 and not w.headless
    ]
    for port, host, name, role in wanted:
        owner = processes.port_owner(port, host)
        if owner:
            what = {"proxy": "proxy.port", "span": "span.port"}.get(role, "worker_port_base")
            raise PreflightError(
                f"port {port} (for {name}) is taken by {owner}", f"stop that process, or change {what} in the profile"
            )
    return notes


def write_proxy_files(path: Path, config: dict[str, Any], members: dict[str, Any] | None = None) -> None:
    """The LiteLLM config and, beside it, the plug-ins it names and the launcher (LiteLLM loads callbacks by
    path from the config's folder); on a cluster's entry, the members its proxy watches."""
    import json

    import yaml

    for copy, source in PROXY_PLUGINS.items():
        copy_plugin(source, path.with_name(copy))
    if members is not None:
        write_atomic(path.with_name(MEMBERS_FILE), json.dumps(members, indent=2) + "\n")
    else:  # not an entry (now): an earlier run's list would make `memoria status` show hosts it does not route
        path.with_name(MEMBERS_FILE).unlink(missing_ok=True)
    write_atomic(
        path,
        "# written by memoria from the plan; edits are overwritten at the next `up`\n"
        + yaml.safe_dump(config, sort_keys=False),
    )


def proxy_plugin_sources() -> dict[str, str]:
    """The files LiteLLM loads from beside its config, by the names it loads them under (for a ConfigMap)."""
    return {copy: plugin_text(source) for copy, source in PROXY_PLUGINS.items()}


def write_vllm_site(folder: Path) -> None:
    """memoria's start-up hook for vLLM (plugins/vllm_hooks.py), where CPU workers' PYTHONPATH looks for it."""
    for copy, source in VLLM_SITE.items():
        copy_plugin(source, folder / copy)
