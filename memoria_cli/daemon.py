"""`memoria up`'s engine: prepare the stack (pure parts), preflight, then run the supervisor loop.

The loop is the same in the foreground and in the detached supervisor (`up -d` starts this module's loop
in a new session and watches state.json). One supervisor per home, held by flock on supervisor.lock.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memoria_cli import processes
from memoria_cli.errors import PreflightError, StartError
from memoria_cli.files import copy_module
from memoria_cli.home import Home
from memoria_cli.inventory import Inventory, inventory_for
from memoria_cli.model_facts import read_facts
from memoria_cli.planner import Plan, plan
from memoria_cli.probes import HttpProber
from memoria_cli.profile import Profile, load_profile
from memoria_cli.proxy_config import auth_env, render, worker_key_env, worker_keys, write_config
from memoria_cli.runtimes import Runtimes
from memoria_cli.state import read_state, supervisor_alive, write_state
from memoria_cli.supervisor import Policy, Proc, Supervisor
from memoria_cli.worker_spec import PROXY, ProcessSpec, proxy_spec, specs_for


@dataclass
class Stack:
    home: Home
    profile: Profile
    inventory: Inventory
    plan: Plan
    workers: list[ProcessSpec]
    proxy: ProcessSpec
    proxy_config: dict[str, Any]
    auth: bool
    proxy_env: dict[str, str] = field(repr=False)  # may hold the master key: never logged, never in argv
    worker_keys: dict[str, str] = field(default_factory=dict, repr=False)  # name -> its VLLM_API_KEY (with auth)

    @property
    def url(self) -> str:
        return f"http://{self.plan.proxy_host}:{self.plan.proxy_port}/v1"


def make_plan(profile: Profile, gpus: str | None) -> tuple[Inventory, Plan]:
    inv = inventory_for(gpus)
    facts = {m.name: read_facts(m) for m in profile.models}
    return inv, plan(profile, inv, facts)


def write_vllm_site(folder: Path) -> None:
    """memoria's start-up hook for vLLM (vllm_hooks.py), where CPU workers' PYTHONPATH looks for it."""
    copy_module("vllm_hooks.py", folder / "sitecustomize.py")


def prepare(home: Home, profile_name: str, gpus: str | None = None) -> Stack:
    """Everything `up` will run, computed before anything starts (so a bad plan launches nothing)."""
    profile = load_profile(profile_name)
    inv, the_plan = make_plan(profile, gpus)
    vllm, litellm = Runtimes(home.runtimes).require()
    auth, env = auth_env(profile.proxy.host)
    env["MEMORIA_LOOPBACK_ONLY"] = "0" if auth else "1"  # proxy_fastpath.RequestGuard: Host checked without a key
    keys = worker_keys(the_plan) if auth else {}
    for i, w in enumerate(the_plan.workers):
        if w.name in keys:
            env[worker_key_env(i)] = keys[w.name]
    specs = specs_for(the_plan, profile, vllm, home)
    proxy = proxy_spec(the_plan, litellm, home.proxy_config, home.log_for(PROXY), home.marker)
    return Stack(home=home, profile=profile, inventory=inv, plan=the_plan, workers=specs, proxy=proxy,
                 proxy_config=render(the_plan, profile, auth), auth=auth, proxy_env=env,
                 worker_keys=keys)


# ---------------------------------------------------------------------------------------------- lock


def acquire_lock(home: Home) -> int:
    """Hold the home's supervisor lock for this process's life, or say who holds it."""
    home.ensure()
    fd = os.open(home.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise PreflightError(f"memoria is already running for {home.root} (supervisor pid {holder})",
                             "`memoria status` shows it, `memoria down` stops it") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def lock_holder(home: Home) -> int | None:
    """The pid of the supervisor holding this home's lock, whatever state.json says (it may be corrupt or
    gone); None when nobody holds it. The kernel drops a flock with its holder, so a held lock is a live one."""
    try:
        fd = os.open(home.lock_file, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 64).decode(errors="replace").strip()
        os.close(fd)
        return int(text) if text.isdigit() else None
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


def refuse_if_running(home: Home) -> None:
    """The "already running" error now, before a detached start, rather than from the child."""
    release_lock(acquire_lock(home))


def release_lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


# ----------------------------------------------------------------------------------------- preflight


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
    for spec in [*stack.workers, stack.proxy]:
        host = stack.plan.proxy_host if spec.role == "proxy" else "127.0.0.1"
        owner = processes.port_owner(spec.port, host)
        if owner:
            what = "proxy.port" if spec.role == "proxy" else "worker_port_base"
            raise PreflightError(f"port {spec.port} (for {spec.name}) is taken by {owner}",
                                 f"stop that process, or change {what} in the profile")
    return notes


# -------------------------------------------------------------------------------------- real effects


class RealSpawner:
    def __init__(self, extra_env: dict[str, dict[str, str]]) -> None:
        self.extra_env = extra_env

    def spawn(self, spec: ProcessSpec) -> processes.Child:
        return processes.spawn(spec, self.extra_env.get(spec.name))

    def stop(self, handles: list, grace: float) -> None:
        processes.stop_groups(handles, grace)

    def log_tail(self, spec: ProcessSpec, lines: int) -> list[str]:
        return tail(spec.log, lines) if spec.log else []


def tail(path: Path, lines: int) -> list[str]:
    """The last lines of a log, read from the end (logs grow large)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024 * max(1, lines // 50)))
            return f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# --------------------------------------------------------------------------------------------- state


def snapshot(stack: Stack, sup: Supervisor, phase: str, started: float) -> dict[str, Any]:
    import psutil

    me = psutil.Process()
    offset = time.time() - time.monotonic()  # the supervisor's clock is monotonic; readers want wall time

    def wall(t: float | None) -> float | None:
        return t + offset if t is not None else None

    procs = {}
    for p in sup.procs:
        w = next((w for w in stack.plan.workers if w.name == p.name), None)
        entry = stack.profile.model(p.name) if w else None
        procs[p.name] = {
            "state": p.state.value, "reason": p.reason, "kind": w.kind if w else "proxy",
            "pid": p.handle.pid if p.handle else None,
            "create_time": p.handle.create_time if p.handle else None,
            "port": p.spec.port, "devices": list(p.spec.devices), "restarts": p.restarts,
            "started_at": wall(p.started_at), "ready_at": wall(p.ready_at), "log": str(p.spec.log),
            "aliases": entry.aliases if entry else [], "note": entry.note if entry else None,
            "model": entry.model if entry else None,
        }
    return {
        "phase": phase,
        "supervisor": {"pid": me.pid, "create_time": me.create_time(), "started_at": started},
        "profile": stack.profile.name, "profile_path": str(stack.profile.source or ""),
        "url": stack.url, "auth": stack.auth, "engine": stack.plan.engine,
        "marker": stack.home.marker, "plan": stack.plan.to_dict(), "processes": procs,
    }


def restart_requests(home: Home) -> list[str]:
    """Names asked for by `memoria restart NAME` (one file each under requests/), consumed here."""
    d = home.root / "requests"
    names = []
    if d.is_dir():
        for f in sorted(d.glob("restart-*")):
            names.append(f.name.removeprefix("restart-"))
            f.unlink(missing_ok=True)
    return names


def request_restart(home: Home, name: str) -> None:
    d = home.root / "requests"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"restart-{name}").write_text(str(time.time()))


# ---------------------------------------------------------------------------------------------- loop


def policy_for(profile: Profile) -> Policy:
    return Policy(startup_timeout=profile.startup_timeout, **profile.supervision.model_dump())


def supervise(stack: Stack, on_tick: Callable[[Supervisor, str], None] | None = None,
              policy: Policy | None = None, poll: float = 0.5) -> None:
    """Hold the lock, start everything, keep it running until SIGTERM/SIGINT; raise StartError if bring-up fails."""
    lock = acquire_lock(stack.home)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    started = time.time()
    phase = "starting"

    def changed(p: Proc | None = None) -> None:
        """Written at once: a stop that follows may block the loop for its grace period."""
        write_state(stack.home.state_file, snapshot(stack, sup, phase, started))

    extra = {PROXY: stack.proxy_env, **{n: {"VLLM_API_KEY": k} for n, k in stack.worker_keys.items()}}
    sup = Supervisor(stack.workers, stack.proxy, RealSpawner(extra), HttpProber(stack.worker_keys), time.monotonic,
                     policy or policy_for(stack.profile), on_change=changed)
    failure: Proc | None = None
    try:
        for note in preflight(stack):
            print(f"memoria: {note}", flush=True)
        write_config(stack.home.proxy_config, stack.proxy_config)
        write_vllm_site(stack.home.vllm_site)
        while not stopping:
            for name in restart_requests(stack.home):
                if any(p.name == name for p in sup.procs):
                    sup.restart(name)
            sup.tick()
            if phase == "starting":
                failure = sup.bringing_up_failed()
                if failure:
                    break
                if sup.all_ready():
                    phase = "running"
                    changed()
            if on_tick:
                on_tick(sup, phase)
            time.sleep(poll)
    finally:
        write_state(stack.home.state_file, snapshot(stack, sup, "stopping", started))
        sup.stop_all()
        processes.sweep(stack.home.marker)
        final = "failed" if failure else "stopped"
        write_state(stack.home.state_file, snapshot(stack, sup, final, started))
        for s, h in old.items():
            signal.signal(s, h)
        release_lock(lock)
    if failure:
        raise StartError(f"{failure.name} could not start: {failure.reason}",
                         f"see `memoria logs {failure.name}`")
