"""The supervisor's state machine with a scripted spawner, prober and clock: no processes, no sockets."""

from __future__ import annotations

import random

from memoria_cli.core.worker_spec import PROXY, ProcessSpec
from memoria_cli.run.probes import progress_total
from memoria_cli.run.supervisor import Policy, Progress, S, Supervisor, classify


class FakeHandle:
    def __init__(self, pid: int) -> None:
        self.pid, self.create_time, self.rc = pid, float(pid), None

    def poll(self):
        return self.rc


class FakeSpawner:
    def __init__(self) -> None:
        self.spawned: list[str] = []
        self.handles: dict[str, FakeHandle] = {}
        self.stopped: list[int] = []
        self.log: dict[str, list[str]] = {}

    def spawn(self, spec):
        h = FakeHandle(len(self.spawned) + 100)
        self.spawned.append(spec.name)
        self.handles[spec.name] = h
        return h

    def stop(self, handles, grace):
        for h in handles:
            self.stopped.append(h.pid)
            h.rc = -15

    def log_tail(self, spec, lines):
        return self.log.get(spec.name, [])


class FakeProber:
    def __init__(self) -> None:
        self.ready_set: set[str] = set()
        self.dead: set[str] = set()
        self.progress_of: dict[str, Progress] = {}

    def progress(self, spec):
        return self.progress_of.get(spec.name)

    def ready(self, spec):
        return spec.name in self.ready_set

    def live(self, spec):
        return spec.name not in self.dead


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def spec(name, devices=(), role="worker"):
    return ProcessSpec(
        name=name, argv=("x",), env={}, port=1, ready_path="/h", live_path="/h", devices=devices, role=role
    )


def make(workers=("a", "b"), devices=None, policy=Policy(jitter=0.0), prober=None, parking=None, on_change=None):
    sp, pr, clk = FakeSpawner(), prober or FakeProber(), Clock()
    sup = Supervisor(
        [spec(n, d) for n, d in zip(workers, devices or [()] * len(workers), strict=True)],
        spec(PROXY, role="proxy"),
        sp,
        pr,
        clk,
        policy,
        rng=random.Random(0),
        on_change=on_change,
        parking=parking,
    )
    return sup, sp, pr, clk


def test_workers_then_proxy():
    sup, sp, pr, clk = make()
    sup.tick()
    assert sp.spawned == ["a", "b"] and sup.get(PROXY).state == S.STOPPED  # proxy waits for the workers
    pr.ready_set |= {"a", "b"}
    sup.tick()
    assert sup.get("a").state == S.READY and sup.get("b").state == S.READY
    sup.tick()
    assert sp.spawned[-1] == PROXY
    pr.ready_set.add(PROXY)
    sup.tick()
    assert sup.all_ready()


def test_workers_sharing_a_gpu_start_one_at_a_time():
    sup, sp, pr, clk = make(("a", "b", "c"), ((0,), (0,), (1,)))
    sup.tick()
    assert sp.spawned == ["a", "c"]  # b shares GPU 0 with a starting worker
    pr.ready_set.add("a")
    sup.tick()
    assert sp.spawned == ["a", "c", "b"]


def test_crash_restarts_with_doubling_backoff_then_resets():
    sup, sp, pr, clk = make(("a",), ((),))
    pr.ready_set |= {"a", PROXY}
    for _ in range(3):
        sup.tick()
    delays = []
    for _ in range(4):
        sp.handles["a"].rc = 1  # crash
        sup.tick()
        p = sup.get("a")
        assert p.state == S.BACKOFF
        delays.append(round(p.next_try - clk.t, 3))
        clk.t = p.next_try
        sup.tick()  # restarted
        assert p.state == S.STARTING
        sup.tick()
        assert p.state == S.READY
    assert delays == [2.0, 4.0, 8.0, 16.0]
    clk.t += 601  # ready for more than 10 min: the next failure backs off from the base again
    sup.tick()
    sp.handles["a"].rc = 1
    sup.tick()
    assert round(sup.get("a").next_try - clk.t, 3) == 2.0


def test_backoff_cap_and_jitter():
    sup = Supervisor([spec("a")], None, FakeSpawner(), FakeProber(), Clock(), Policy(), rng=random.Random(1))
    ds = [sup.backoff_delay(n) for n in range(1, 12)]
    assert all(d <= 120 * 1.2 for d in ds) and ds[-1] >= 120 * 0.8
    assert 2 * 0.8 <= ds[0] <= 2 * 1.2


def test_fatal_after_three_failed_starts_and_restart_recovers():
    sup, sp, pr, clk = make(("a",), ((),))
    for _ in range(3):
        sup.tick()  # spawn
        sp.handles["a"].rc = 1
        sup.tick()  # exited before ready
        clk.t = sup.get("a").next_try
    assert sup.get("a").state == S.FATAL
    assert "3 failed starts" in sup.get("a").reason
    assert sup.bringing_up_failed() is sup.get("a")
    n = len(sp.spawned)
    clk.t += 1000
    sup.tick()
    assert len(sp.spawned) == n  # FATAL stays down
    sup.restart("a")
    sup.tick()
    assert len(sp.spawned) == n + 1 and sup.get("a").state == S.STARTING


def test_non_retryable_error_goes_straight_to_fatal():
    sup, sp, pr, clk = make(("a",), ((),))
    sup.tick()
    sp.log["a"] = [
        "ValueError: Free memory on device (3.1/23.6 GiB) on startup is less than desired GPU memory "
        "utilization (0.4, 9.4 GiB)."
    ]
    sp.handles["a"].rc = 1
    sup.tick()
    p = sup.get("a")
    assert p.state == S.FATAL and "not enough free GPU memory" in p.reason and p.failed_starts == 1


def test_classify():
    assert classify(["OSError: /m does not appear to have a file named config.json"]).startswith("model not found")
    assert classify(["RuntimeError: Engine core initialization failed"]) is None
    # vLLM 0.32's refusals at start-up, as kv_cache_utils.py and v1/worker/utils.py word them
    kv = (
        "ValueError: To serve at least one request with the model's max seq len (32768), (4.5 GiB KV cache is "
        "needed, which is larger than the available KV cache memory (3.2 GiB). Based on the available memory, "
        "the estimated maximum model length is 23296. Try increasing `gpu_memory_utilization`"
    )
    assert classify([kv]) == (
        "vLLM measured more memory than planned and its KV cache holds at most 23296 tokens: "
        "set the model's `context:` to 23296 or less"
    )
    free = (
        "ValueError: Free memory on device cuda:0 (9.1/22.5 GiB) on startup is less than desired GPU memory "
        "utilization (0.4629, 10.4 GiB)."
    )
    assert classify([free]).startswith("not enough free GPU memory at its start: another process holds some")


def test_startup_timeout_counts_as_failed_start():
    sup, sp, pr, clk = make(("a",), ((),), Policy(startup_timeout=60, jitter=0.0))
    sup.tick()
    clk.t += 61
    sup.tick()
    p = sup.get("a")
    assert p.state == S.BACKOFF and "not ready after 60 s" in p.reason and sp.stopped == [sp.handles["a"].pid]


def test_liveness_misses_restart_after_three():
    sup, sp, pr, clk = make(("a",), ((),))
    pr.ready_set |= {"a", PROXY}
    for _ in range(3):
        sup.tick()
    pr.dead.add("a")
    states = []
    for _ in range(3):
        clk.t += 10
        sup.tick()
        states.append(sup.get("a").state)
    assert states == [S.UNHEALTHY, S.UNHEALTHY, S.BACKOFF]
    assert sp.stopped == [sp.handles["a"].pid]  # the hung one was killed before the restart


def test_too_many_crashes_in_window_is_fatal():
    sup, sp, pr, clk = make(("a",), ((),))
    pr.ready_set |= {"a", PROXY}
    sup.tick()
    for _ in range(6):
        sup.tick()
        sp.handles["a"].rc = 1
        sup.tick()
        if sup.get("a").state == S.FATAL:
            break
        clk.t = sup.get("a").next_try
        sup.tick()
    assert sup.get("a").state == S.FATAL and "6 crashes in 30 min" in sup.get("a").reason
    assert sup.bringing_up_failed() is None  # it had been ready: the others keep serving


def test_stop_all_stops_proxy_first():
    sup, sp, pr, clk = make()
    pr.ready_set |= {"a", "b", PROXY}
    for _ in range(3):
        sup.tick()
    sup.stop_all()
    assert sp.stopped[0] == sp.handles[PROXY].pid
    assert {p.state for p in sup.procs} == {S.STOPPED}


def test_a_crashed_proxy_restarts_even_when_a_worker_went_fatal():
    """The 'no FATAL worker' rule is for the first bring-up only: later, one dead model must not take the
    endpoint of the others down with it; `memoria restart proxy` works as well."""
    sup, sp, pr, clk = make()
    pr.ready_set |= {"a", "b", PROXY}
    for _ in range(3):
        sup.tick()
    assert sup.all_ready()
    sp.log["a"] = ["ValueError: is not a local folder and is not a valid model identifier"]
    sp.handles["a"].rc = 1
    sup.tick()  # a crashed: backoff
    clk.t += 10
    pr.ready_set.discard("a")
    sup.tick()  # restarted
    sp.handles["a"].rc = 1
    sup.tick()
    assert sup.get("a").state == S.FATAL
    sp.handles[PROXY].rc = 1  # now the proxy dies
    sup.tick()
    assert sup.get(PROXY).state == S.BACKOFF
    clk.t += 10
    sup.tick()
    assert sup.get(PROXY).state == S.STARTING and sp.spawned.count(PROXY) == 2
    sup.tick()
    assert sup.get(PROXY).state == S.READY
    sup.restart(PROXY)
    sup.tick()
    assert sp.spawned.count(PROXY) == 3


def test_the_role_not_the_name_makes_the_proxy():
    """A worker named like the proxy would be refused at profile load; the supervisor keys on the role."""
    sp, pr, clk = FakeSpawner(), FakeProber(), Clock()
    sup = Supervisor([spec("proxy-like")], spec("front", role="proxy"), sp, pr, clk, Policy(jitter=0.0))
    sup.tick()
    assert sp.spawned == ["proxy-like"]  # the proxy ("front") waits for the workers
    assert [p.name for p in sup.workers] == ["proxy-like"]


def test_a_hung_engine_behind_a_live_health_is_restarted():
    """vLLM's /health says 200 while its engine core is stuck: requests in flight with the work counters
    standing still for stall_timeout means hung; idle, or counters moving, never does."""
    sup, sp, pr, clk = make(policy=Policy(jitter=0.0, live_interval=2, stall_timeout=10))
    pr.ready_set |= {"a", "b", PROXY}
    for _ in range(3):
        sup.tick()
    assert sup.all_ready()
    first = sp.handles["a"].pid

    def run_for(seconds: float, **progress: Progress) -> None:
        end = clk.t + seconds
        while clk.t < end:
            pr.progress_of.update(progress)
            clk.t += 2
            sup.tick()

    run_for(30, a=Progress(in_flight=0, done=5.0))  # idle: nothing to wait for
    assert sup.get("a").state == S.READY
    for step in range(10):  # busy and working: the counters move
        run_for(4, a=Progress(in_flight=3, done=6.0 + step))
    assert sup.get("a").state == S.READY
    run_for(8, a=Progress(in_flight=3, done=20.0))  # stuck, but not for long enough yet
    assert sup.get("a").state == S.READY
    run_for(4, a=Progress(in_flight=3, done=20.0))
    assert sup.get("a").state == S.BACKOFF and "no progress for 10 s" in sup.get("a").reason
    assert sp.stopped == [first]  # its group was stopped, to be started again
    assert sup.get("b").state == S.READY and sup.get(PROXY).state == S.READY


def test_progress_is_read_from_vllms_metrics():
    text = """# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="a"} 120.0
vllm:generation_tokens_total{engine="0",model_name="a"} 30.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="a"} 2.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="a"} 1.0
vllm:num_requests_running{engine="0",model_name="a"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.25
"""
    assert progress_total(text) == 153.0 + 250_000.0  # the KV usage moves with each prefill chunk


def test_every_transition_is_reported_once_with_its_reason():
    """The lifecycle log's source (run/loop.py writes one line each): from, to and why, in order."""
    from memoria_cli.run.loop import transition_line
    from memoria_cli.run.supervisor import Transition

    seen: list[Transition] = []
    sup = Supervisor([spec("a")], None, FakeSpawner(), FakeProber(), Clock(), Policy(jitter=0.0), on_change=seen.append)
    sup.prober.ready_set.add("a")
    sup.tick()
    sup.tick()
    sup.prober.dead.add("a")
    for _ in range(3):
        sup.clock.t += 10
        sup.tick()
    assert [(t.old, t.new) for t in seen] == [
        ("stopped", "starting"),
        ("starting", "ready"),
        ("ready", "unhealthy"),
        ("unhealthy", "unhealthy"),
        ("unhealthy", "backoff"),
    ]
    assert seen[-1].why.startswith("3 missed health checks: restarted; retry in 2.0 s")
    assert transition_line(seen[1], 0.0).endswith(" a: starting -> ready (ready in 0.0 s)")
