"""The supervisor loop: hold the home's lock, start everything, keep it running until SIGTERM/SIGINT.

The same loop runs in the foreground (`up`) and in the detached supervisor (`up -d` starts `_supervise`).
Every transition is written to state.json at once and logged as one line in logs/supervisor.log.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from memoria_cli.core.errors import StartError
from memoria_cli.core.plan import Plan
from memoria_cli.core.profile import Profile
from memoria_cli.core.proxy_config import MASTER_KEY_ENV
from memoria_cli.core.service_unit import SERVICE_ENV
from memoria_cli.core.worker_spec import PROXY, ProcessSpec
from memoria_cli.plugins import ops
from memoria_cli.run import processes, usage
from memoria_cli.run.files import open_log
from memoria_cli.run.groups import GroupWatch
from memoria_cli.run.lock import acquire_lock, release_lock
from memoria_cli.run.logs import tail
from memoria_cli.run.probes import HttpProber
from memoria_cli.run.stack import Stack, preflight, write_proxy_files, write_vllm_site
from memoria_cli.run.state import Phase, ProcessRecord, RunState, SupervisorRecord, write_state
from memoria_cli.run.supervisor import Handle, Parking, Policy, Proc, S, Supervisor, Transition

SUPERVISOR_LOG = "supervisor.log"
STARTING_POLL = 0.1  # seconds between ticks while a worker starts


class RealSpawner:
    def __init__(self, extra_env: dict[str, dict[str, str]]) -> None:
        self.extra_env = extra_env

    def spawn(self, spec: ProcessSpec) -> processes.Child:
        return processes.spawn(spec, self.extra_env.get(spec.name))

    def stop(self, handles: list[Handle], grace: float) -> None:
        processes.stop_groups([h for h in handles if isinstance(h, processes.Child)], grace)

    def log_tail(self, spec: ProcessSpec, lines: int) -> list[str]:
        return tail(spec.log, lines) if spec.log else []


def snapshot(
    stack: Stack, sup: Supervisor, phase: Phase, started: float, used: dict[str, int] | None = None
) -> RunState:
    import psutil

    me = psutil.Process()
    offset = time.time() - time.monotonic()  # the supervisor's clock is monotonic; readers want wall time

    def wall(t: float | None) -> float | None:
        return t + offset if t is not None else None

    procs = {}
    for p in sup.procs:
        w = next((w for w in stack.plan.workers if w.name == p.name), None)
        entry = stack.profile.model(p.name) if w else None
        procs[p.name] = ProcessRecord(
            state=p.state.value,
            reason=p.reason,
            kind=w.kind if w else "proxy",
            pid=p.handle.pid if p.handle else None,
            create_time=p.handle.create_time if p.handle else None,
            port=p.spec.port,
            devices=list(p.spec.devices),
            restarts=p.restarts,
            started_at=wall(p.started_at),
            ready_at=wall(p.ready_at),
            log=str(p.spec.log),
            aliases=entry.aliases if entry else [],
            note=entry.note if entry else None,
            model=entry.model if entry else None,
            memory=(used or {}).get(p.name) if p.handle else None,  # a stopped worker holds nothing
            rank=p.group.rank if p.group else None,
            run=p.run,
            joined=p.joined,
            flags=p.group.flags if p.group else {},
        )
    return RunState(
        phase=phase,
        supervisor=SupervisorRecord(me.pid, me.create_time(), started),
        profile=stack.profile.name,
        profile_path=str(stack.profile.source or ""),
        url=stack.url,
        auth=stack.auth,
        engine=stack.plan.engine,
        marker=stack.home.marker,
        plan=stack.plan,
        processes=procs,
        service=os.environ.get(SERVICE_ENV, ""),
    )


def transition_line(t: Transition, wall: float) -> str:
    """One lifecycle line, like honcho's and systemd's: time, process, from, to, why."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(wall))
    return f"{stamp} {t.name}: {t.old} -> {t.new}" + (f" ({t.why})" if t.why else "")


def nap(seconds: float, watched: Path, step: float = 0.05) -> None:
    """Sleep `seconds`, or less when a request lands in `watched`: a request held for a sleeping worker waits
    on the wake (a level-1 wake takes well under a second on a GPU: the loop's pace must not double it)."""

    def stamp() -> int | None:
        try:
            return watched.stat().st_mtime_ns
        except OSError:
            return None

    before, end = stamp(), time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(step, left))
        if stamp() != before:
            return


def parking_for(plan: Plan) -> dict[str, Parking]:
    return {w.name: Parking(w.idle, w.idle_after, w.sleep_level, w.slot) for w in plan.workers if w.idle != "never"}


def policy_for(profile: Profile) -> Policy:
    return Policy(startup_timeout=profile.startup_timeout, **profile.supervision.model_dump())


def supervise(
    stack: Stack,
    on_tick: Callable[[Supervisor, Phase], None] | None = None,
    policy: Policy | None = None,
    poll: float = 0.5,
) -> None:
    """Hold the lock, start everything, keep it running until SIGTERM/SIGINT; raise StartError if bring-up fails."""
    lock = acquire_lock(stack.home)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    started = time.time()
    phase: Phase = "starting"
    lifecycle = open_log(stack.home.logs / SUPERVISOR_LOG)

    def changed(t: Transition) -> None:
        """Written at once: a stop that follows may block the loop for its grace period."""
        lifecycle.write((transition_line(t, time.time()) + "\n").encode())
        lifecycle.flush()
        write_state(stack.home.state_file, snapshot(stack, sup, phase, started, used))

    used: dict[str, int] = {}  # the last sample, kept in every snapshot until the next
    sampled = 0.0
    extra = {PROXY: stack.proxy_env, **{n: {"VLLM_API_KEY": k} for n, k in stack.worker_keys.items()}}
    sup = Supervisor(
        stack.workers,
        stack.proxy,
        RealSpawner(extra),
        HttpProber(stack.worker_keys),
        time.monotonic,
        policy or policy_for(stack.profile),
        on_change=changed,
        parking=parking_for(stack.plan),
        groups=stack.groups,
    )
    watch = GroupWatch(stack.peers, stack.proxy_env.get(MASTER_KEY_ENV))
    failure: Proc | None = None
    try:
        for note in preflight(stack):
            print(f"memoria: {note}", flush=True)
        write_proxy_files(stack.home.proxy_config, stack.proxy_config, stack.members)
        write_vllm_site(stack.home.vllm_site)
        watch.start()
        while not stopping:
            # asked by `memoria restart`, the status page, and requests held at the proxy (plugins/ops.py)
            for name in ops.take_requests(stack.home.root, "restart"):
                if any(p.name == name for p in sup.procs):
                    sup.restart(name)
            for name in ops.take_requests(stack.home.root, "wake"):
                if any(p.name == name for p in sup.workers):
                    sup.wake(name)
            for name, views in watch.take().items():  # the other hosts' ranks of this host's spans
                sup.observe(name, views)
            sup.tick()
            if phase == "starting":
                failure = sup.bringing_up_failed()
                if failure:
                    break
                if sup.all_ready():
                    phase = "running"
                    write_state(stack.home.state_file, snapshot(stack, sup, phase, started, used))
            if time.monotonic() - sampled >= usage.EVERY:
                sampled = time.monotonic()
                used.clear()
                roots = {p.name: usage.Root(p.handle.pid, len(p.spec.devices)) for p in sup.procs if p.handle}
                used.update(usage.worker_memory(roots, stack.plan.engine == "cuda"))
                write_state(stack.home.state_file, snapshot(stack, sup, phase, started, used))
            if on_tick:
                on_tick(sup, phase)
            # a starting worker is probed often: a request may be held for it (the bare start polls as fast)
            starting = any(p.state == S.STARTING for p in sup.procs)
            nap(min(poll, STARTING_POLL) if starting else poll, stack.home.root / ops.REQUESTS)
    finally:
        watch.stop()
        write_state(stack.home.state_file, snapshot(stack, sup, "stopping", started))
        sup.stop_all()
        processes.sweep(stack.home.marker)
        write_state(stack.home.state_file, snapshot(stack, sup, "failed" if failure else "stopped", started))
        for s, h in old.items():
            signal.signal(s, h)
        lifecycle.close()
        release_lock(lock)
    if failure:
        raise StartError(f"{failure.name} could not start: {failure.reason}", f"see `memoria logs {failure.name}`")
