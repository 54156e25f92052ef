"""The supervisor's state machine (DESIGN §5). Clock, spawner, prober and randomness are injected.

    STOPPED -> STARTING -> READY -> UNHEALTHY -> BACKOFF -> STARTING ...        (restart with backoff)
    STARTING --(3 failed starts in a row | a non-retryable error)--> FATAL     (until `memoria restart`)
    READY --(more than 5 crashes in 30 min)--> FATAL

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
from memoria_cli.core.worker_spec import ProcessSpec


class S(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    BACKOFF = "backoff"
    FATAL = "fatal"


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
    ) -> None:
        self.procs = [Proc(s) for s in workers] + ([Proc(proxy)] if proxy else [])
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
        return all(p.state == S.READY for p in self.procs)

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

    def _may_start(self, p: Proc) -> bool:
        """Workers sharing a GPU start one at a time (vLLM measures memory while it starts); the proxy last, at
        the first bring-up once every worker is ready; later it restarts whatever the workers' states (a
        FATAL worker must not take the endpoint of the others down with it)."""
        if p.spec.role == "proxy":
            if p.ever_ready or p.restarts:
                return True
            return all(w.ever_ready for w in self.workers) and not any(w.state == S.FATAL for w in self.workers)
        if not p.spec.devices:
            return True
        return not any(
            q is not p and q.state == S.STARTING and set(q.spec.devices) & set(p.spec.devices) for q in self.procs
        )

    def _set(self, p: Proc, state: S, reason: str = "") -> None:
        old, p.state, p.reason = p.state, state, reason
        self.on_change(Transition(p.name, old.value, state.value, reason))

    def _start(self, p: Proc, now: float) -> None:
        p.handle = self.spawner.spawn(p.spec)
        p.started_at, p.ready_at, p.misses, p.progress = now, None, 0, None
        self._set(p, S.STARTING, "starting")

    def _check_starting(self, p: Proc, now: float) -> None:
        assert p.handle is not None and p.started_at is not None
        rc = p.handle.poll()
        if rc is not None:
            self._failed_start(p, now, f"exited with code {rc} before it was ready")
            self.spawner.stop([p.handle], 0)  # what its dead leader left (vLLM's engine core): no grace needed
        elif now - p.started_at > self.policy.startup_timeout:
            self._failed_start(p, now, f"not ready after {self.policy.startup_timeout:.0f} s")
            self.spawner.stop([p.handle], self.policy.grace)
        elif self.prober.ready(p.spec):
            p.ready_at = p.last_live = now
            p.failed_starts, p.ever_ready = 0, True
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
        if now - p.last_live < self.policy.live_interval:
            return
        p.last_live = now
        if self.prober.live(p.spec):
            if p.misses:
                p.misses = 0
                self._set(p, S.READY, "answering again")
            if self._stalled(p, now):
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

    def _stalled(self, p: Proc, now: float) -> bool:
        """vLLM's /health answers 200 while its engine core is hung: watch the work instead. Progress moves
        while the engine works; with nothing in flight there is nothing to wait for."""
        if not self.policy.stall_timeout or p.spec.role != "worker":
            return False
        got = self.prober.progress(p.spec)
        if got is None:
            return False  # no figures this time: nothing to conclude
        if got.in_flight <= 0 or got.done != p.progress:
            p.progress, p.progress_at = got.done, now
            return False
        return now - p.progress_at >= self.policy.stall_timeout

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
        self._set(p, S.BACKOFF, f"{what}; retry in {delay:.1f} s")

    def backoff_delay(self, streak: int) -> float:
        base = min(self.policy.backoff_cap, self.policy.backoff_base * 2 ** (streak - 1))
        return float(base * (1 + self.rng.uniform(-self.policy.jitter, self.policy.jitter)))

    # ---- commands
    def restart(self, name: str) -> None:
        """`memoria restart NAME`: a clean slate, whatever the state (FATAL included)."""
        p = self.get(name)
        if p.handle is not None and p.state in (S.STARTING, S.READY, S.UNHEALTHY):
            self.spawner.stop([p.handle], self.policy.grace)
        p.failed_starts, p.streak, p.crashes, p.misses = 0, 0, [], 0
        p.restarts += 1
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
