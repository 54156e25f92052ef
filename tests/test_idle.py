"""Idle policies without processes: the supervisor's parking (idle detector, drain, sleep or stop, wake, slot
turns) with a scripted spawner, prober and clock; the profile's `idle:` and `slot:`; the plan; the proxy's
held requests (plugins/hold.py) against a state file and an in-process stand-in app."""

from __future__ import annotations

import asyncio
import json

import pytest

from memoria_cli.core.errors import InputError, PreflightError
from memoria_cli.core.inventory import Cpu, Inventory, describe
from memoria_cli.core.model_facts import read_facts
from memoria_cli.core.planner import plan
from memoria_cli.core.profile import parse_profile
from memoria_cli.core.units import GiB, parse_duration
from memoria_cli.core.worker_spec import PROXY, worker_spec
from memoria_cli.plugins import hold, ops, proxy_fastpath, transcripts
from memoria_cli.run.supervisor import DRAIN_MIN, SETTLE, Parking, Policy, Progress, S
from tests.helpers import worker_plan
from tests.test_supervisor import FakeProber
from tests.test_supervisor import make as supervisor


class Prober(FakeProber):
    """FakeProber with vLLM's sleep endpoints: what was asked, and whether it works."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str]] = []
        self.control_ok = True

    def sleep(self, spec, level):
        self.asked.append((spec.name, f"sleep {level}"))
        return self.control_ok

    def wake(self, spec):
        self.asked.append((spec.name, "wake"))
        return self.control_ok


POLICY = Policy(jitter=0.0, live_interval=1.0, stall_timeout=0.0)


def make(parking: dict[str, Parking], workers=("a", "b")):
    changes: list[tuple[str, str, str]] = []
    record = lambda t: changes.append((t.name, t.old, t.new))  # noqa: E731
    sup, sp, pr, clk = supervisor(workers, policy=POLICY, prober=Prober(), parking=parking, on_change=record)
    return sup, sp, pr, clk, changes


def bring_up(sup, pr, names):
    sup.tick()
    pr.ready_set |= {*names, PROXY}
    sup.tick()
    sup.tick()
    sup.tick()


def idle_progress(pr, name, done=5.0):
    pr.progress_of[name] = Progress(in_flight=0, done=done)


def step(sup, clk, seconds, dt=0.5):
    end = clk.t + seconds
    while clk.t < end:
        clk.t += dt
        sup.tick()


def test_an_idle_worker_is_stopped_after_its_time_and_a_request_starts_it_once():
    sup, sp, pr, clk, changes = make({"a": Parking("stop", after=60.0)})
    bring_up(sup, pr, ["a", "b"])
    assert sup.all_ready()
    idle_progress(pr, "a")
    idle_progress(pr, "b")
    step(sup, clk, 59.0)
    assert sup.get("a").state == S.READY  # 59 s: not yet
    step(sup, clk, 3.0 + DRAIN_MIN)
    a = sup.get("a")
    assert a.state == S.SLEEPING and a.handle is None and "stopped" in a.reason
    assert sup.get("b").state == S.READY  # no policy: never parks
    assert sup.all_ready()  # parked counts as up
    spawned = len(sp.spawned)
    for _ in range(50):  # a burst: fifty held requests, one wake
        sup.wake("a")
    sup.tick()
    assert a.state == S.STARTING and a.reason == "woken by a request: starting"
    for _ in range(50):
        sup.wake("a")
    sup.tick()
    assert len(sp.spawned) == spawned + 1
    sup.tick()  # still not ready: no second start
    assert len(sp.spawned) == spawned + 1
    assert changes.count(("a", "sleeping", "starting")) == 1


def test_activity_keeps_a_worker_awake():
    sup, sp, pr, clk, _ = make({"a": Parking("stop", after=10.0)}, workers=("a",))
    bring_up(sup, pr, ["a"])
    for i in range(40):  # a request every 2 s moves vLLM's counters
        pr.progress_of["a"] = Progress(in_flight=0, done=float(i // 4))
        step(sup, clk, 1.0)
    assert sup.get("a").state == S.READY
    pr.progress_of["a"] = Progress(in_flight=1, done=99.0)  # a long stream: in flight, counters still
    step(sup, clk, 30.0)
    assert sup.get("a").state == S.READY


def test_a_drain_waits_for_the_stream_in_flight():
    sup, sp, pr, clk, _ = make({"a": Parking("stop", after=5.0)}, workers=("a",))
    bring_up(sup, pr, ["a"])
    idle_progress(pr, "a")
    step(sup, clk, 6.5)
    a = sup.get("a")
    assert a.state == S.DRAINING
    pr.progress_of["a"] = Progress(in_flight=1, done=5.0)  # a request arrived just before
    step(sup, clk, 120.0)
    assert a.state == S.DRAINING and a.handle is not None and not sp.stopped
    idle_progress(pr, "a", 9.0)
    step(sup, clk, 1.0)
    assert a.state == S.SLEEPING and sp.stopped


def test_a_request_during_the_drain_keeps_it_up():
    sup, sp, pr, clk, _ = make({"a": Parking("stop", after=5.0)}, workers=("a",))
    bring_up(sup, pr, ["a"])
    idle_progress(pr, "a")
    step(sup, clk, 6.5)  # the first look sets the counters' baseline: idle from there
    assert sup.get("a").state == S.DRAINING
    sup.wake("a")
    sup.tick()
    assert sup.get("a").state == S.READY and not sp.stopped


def test_sleep_uses_vllms_endpoints_and_falls_back_to_stop():
    sup, sp, pr, clk, _ = make({"a": Parking("sleep", after=5.0, level=2)}, workers=("a",))
    bring_up(sup, pr, ["a"])
    idle_progress(pr, "a")
    step(sup, clk, 8.0)
    a = sup.get("a")
    assert a.state == S.SLEEPING and a.handle is not None and pr.asked == [("a", "sleep 2")]
    assert a.reason == "asleep (vLLM sleep level 2): the next request wakes it"
    sup.wake("a")
    sup.tick()
    assert a.state == S.READY and pr.asked[-1] == ("a", "wake") and len(sp.spawned) == 2  # a and the proxy
    pr.control_ok = False  # a sleep that fails: stop instead, memory is given back either way
    step(sup, clk, 8.0)
    assert a.state == S.SLEEPING and a.handle is None and "vLLM's /sleep failed: stopped instead" in a.reason


def test_a_worker_that_dies_asleep_starts_cold_on_the_next_request():
    sup, sp, pr, clk, _ = make({"a": Parking("sleep", after=5.0)}, workers=("a",))
    bring_up(sup, pr, ["a"])
    idle_progress(pr, "a")
    step(sup, clk, 8.0)
    sp.handles["a"].rc = -9
    sup.tick()
    assert sup.get("a").state == S.SLEEPING and sup.get("a").handle is None
    sup.wake("a")
    sup.tick()
    assert sup.get("a").state == S.STARTING


def test_slot_mates_take_turns():
    slot = {"ocr": Parking("stop", after=600.0, slot="media"), "asr": Parking("stop", after=600.0, slot="media")}
    sup, sp, pr, clk, _ = make(slot, workers=("chat", "ocr", "asr"))
    sup.tick()
    assert sp.spawned == ["chat", "ocr"]  # the slot's first member starts; its mate waits for a request
    asr = sup.get("asr")
    assert asr.state == S.SLEEPING and asr.reason == "waits for its turn in slot media"
    pr.ready_set |= {"chat", "ocr", PROXY}
    sup.tick()
    sup.tick()
    sup.tick()
    assert sup.all_ready()
    pr.progress_of["ocr"] = Progress(in_flight=1, done=1.0)  # ocr serves a request
    clk.t += SETTLE
    sup.wake("asr")
    sup.tick()
    ocr = sup.get("ocr")
    assert ocr.state == S.DRAINING and ocr.reason.startswith("gives way to asr (slot media)")
    step(sup, clk, 5.0)
    assert ocr.state == S.DRAINING and asr.state == S.SLEEPING  # asr waits: ocr's request is still in flight
    idle_progress(pr, "ocr")
    pr.ready_set.discard("ocr")
    step(sup, clk, 1.5)
    assert ocr.state == S.SLEEPING and asr.state == S.STARTING  # never both up
    pr.ready_set.add("asr")
    sup.tick()
    assert asr.state == S.READY
    sup.wake("ocr")  # and back: asr gives way once it has served what was held for it
    sup.tick()
    assert asr.state == S.READY
    idle_progress(pr, "asr")
    pr.ready_set.discard("asr")
    step(sup, clk, SETTLE + DRAIN_MIN + 1.0)
    assert asr.state == S.SLEEPING and ocr.state == S.STARTING


def test_restart_of_a_slot_member_waits_for_its_turn():
    slot = {"ocr": Parking("stop", after=600.0, slot="m"), "asr": Parking("stop", after=600.0, slot="m")}
    sup, sp, pr, clk, _ = make(slot, workers=("ocr", "asr"))
    bring_up(sup, pr, ["ocr"])
    sup.restart("asr")
    assert sup.get("asr").state == S.SLEEPING and sup.get("asr").wanted


# ---- the profile and the plan


SHAPE = {"weights": "100MB", "layers": 2, "kv_heads": 2, "head_dim": 64, "max_context": 2048}


def profile(**idle):
    models = [
        {"name": "chat", "model": "/m/chat", "kind": "chat", "facts": SHAPE},
        {"name": "asr", "model": "/m/asr", "kind": "transcription", "facts": SHAPE, **idle},
    ]
    return parse_profile({"name": "t", "models": models})


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration("1.5h") == 5400
    assert parse_duration(30) == 30 and parse_duration("45") == 45
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_profile_idle_and_slot_errors_name_the_key():
    assert profile(idle={"after": "10m", "action": "stop"}).model("asr").idle.after == 600
    with pytest.raises(InputError, match=r"models\[1\]\.idle\.after: Value error, not a duration: 'soon'"):
        profile(idle={"after": "soon", "action": "stop"})
    with pytest.raises(InputError, match=r"models\[1\]\.idle\.action: Input should be 'never', 'sleep' or 'stop'"):
        profile(idle={"action": "nap"})
    assert profile(slot="m", idle={"action": "stop"}).model("asr").slot == "m"  # alone: nothing to share
    models = [
        {"name": "ocr", "model": "/m/a", "kind": "vision", "slot": "m", "idle": {"action": "stop"}},
        {"name": "asr", "model": "/m/b", "kind": "transcription", "slot": "m"},
    ]
    with pytest.raises(InputError, match="asr is in slot 'm' but never gives way"):
        parse_profile({"name": "t", "models": models})
    bad = {"name": "x", "model": "/m", "kind": "chat", "env": {"VLLM_SERVER_DEV_MODE": "1"}}
    with pytest.raises(InputError, match="env may not set VLLM_SERVER_DEV_MODE"):
        parse_profile({"name": "t", "models": [bad]})


def _facts(prof):
    return {m.name: read_facts(m) for m in prof.models}


def test_on_the_cpu_sleep_is_planned_as_stop_and_the_plan_says_so():
    prof = profile(idle={"after": "2m", "action": "sleep", "level": 1, "hold": "1m"})
    p = plan(prof, Inventory(cpu=Cpu(total=32 * GiB, available=30 * GiB, cores=8)), _facts(prof))
    w = p.worker("asr")
    assert (w.idle, w.idle_after, w.sleep_level, w.hold, w.asleep) == ("stop", 120.0, 0, 60.0, 0)
    assert p.worker("chat").idle == "never" and not p.worker("chat").parks
    assert any("the CPU build of vLLM cannot sleep: asr stop when idle" in n for n in p.notes)


def test_on_a_gpu_sleep_keeps_its_endpoints_on_loopback():
    prof = profile(idle={"after": "2m", "action": "sleep", "level": 1})
    p = plan(prof, describe("L4"), _facts(prof))
    w = p.worker("asr")
    assert w.idle == "sleep" and w.sleep_level == 1 and w.asleep == w.cuda_context + w.non_torch + w.graphs > 0
    s = worker_spec(w, prof.model("asr"), "vllm", None, "m", __import__("pathlib").Path("/c"), None)  # type: ignore[arg-type]
    assert "--enable-sleep-mode" in s.argv and s.env["VLLM_SERVER_DEV_MODE"] == "1"
    chat = worker_spec(p.worker("chat"), prof.model("chat"), "vllm", None, "m", __import__("pathlib").Path("/c"), None)  # type: ignore[arg-type]
    assert "--enable-sleep-mode" not in chat.argv and "VLLM_SERVER_DEV_MODE" not in chat.env
    with pytest.raises(PreflightError, match="asr would serve vLLM's sleep endpoints, which take no key, on 10.0.0.5"):
        worker_spec(w, prof.model("asr"), "vllm", None, "m", __import__("pathlib").Path("/c"), None, host="10.0.0.5")  # type: ignore[arg-type]


def test_the_plan_table_shows_the_policy_and_what_it_gives_back():
    from memoria_cli.cli.views import freed, idle_lines

    w = worker_plan(idle="stop", idle_after=600.0, hold=300.0, fixed=3 * 2**30, kv_bytes=2**30, slot="media")
    assert freed(w) == 4 * 2**30
    assert idle_lines(w) == [
        "idle after 10 min: stop, giving back 4.0 GiB; requests wait up to 5 min for it to wake",
        "slot media: one awake at a time with its slot mates",
    ]
    s = worker_plan(
        idle="sleep", sleep_level=1, idle_after=90.0, hold=60.0, fixed=3 * 2**30, kv_bytes=2**30, asleep=2**29
    )
    assert freed(s) == 4 * 2**30 - 2**29 and idle_lines(s)[0].startswith(
        "idle after 90 s: sleep (level 1), giving back 3.5 GiB"
    )


# ---- requests held at the proxy


def state_file(tmp_path, state="sleeping", hold_s=5.0, idle="stop"):
    doc = {
        "processes": {
            "chat": {"state": "ready", "aliases": ["org/Chat"]},
            "asr": {"state": state, "aliases": ["org/Whisper"]},
        },
        "plan": {"workers": [{"name": "chat", "idle": "never"}, {"name": "asr", "idle": idle, "hold": hold_s}]},
    }
    path = tmp_path / "state.json"
    path.write_text(json.dumps(doc))
    return path, doc


def set_state(path, doc, state):
    doc["processes"]["asr"]["state"] = state
    path.write_text(json.dumps(doc))
    import os

    os.utime(path, ns=(os.stat(path).st_mtime_ns + 10**6,) * 2)  # a new stamp, however fast the test runs


class App:
    """The inner app (the fast path and LiteLLM): records what reached it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        body = await proxy_fastpath.read_body(receive)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app, path, body, ctype=b"application/json", headers=()):
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if chunks:
            return chunks.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", ctype), *headers]}
    await app(scope, receive, send)
    return sent


def held(tmp_path, path, **kw):
    inner = App()
    return inner, hold.Hold(inner, path, kw.get("master"), proxy_fastpath, ops, transcripts)


def test_a_request_for_a_parked_model_waits_asks_once_and_goes_on(tmp_path):
    path, doc = state_file(tmp_path)
    inner, app = held(tmp_path, path)

    async def scenario():
        tasks = [asyncio.ensure_future(call(app, "/v1/chat/completions", b'{"model":"org/Whisper"}')) for _ in range(5)]
        await asyncio.sleep(0.3)
        assert ops.take_requests(tmp_path, "wake") == ["asr"]  # five held requests, one wake asked
        assert inner.bodies == []
        set_state(path, doc, "starting")
        await asyncio.sleep(0.3)
        assert inner.bodies == []
        set_state(path, doc, "ready")
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert inner.bodies == [b'{"model":"org/Whisper"}'] * 5  # the body, replayed whole
    for sent in results:
        start = sent[0]
        assert start["status"] == 200
        waited = float(dict(start["headers"])[b"x-memoria-held"])
        assert 0.5 <= waited < 3.0


def test_transcriptions_are_held_by_their_form_field(tmp_path):
    path, doc = state_file(tmp_path)
    inner, app = held(tmp_path, path)
    form = (
        b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        b'RIFF\r\n--XX\r\nContent-Disposition: form-data; name="model"\r\n\r\nasr\r\n--XX--\r\n'
    )
    assert transcripts.form_field(form, b"multipart/form-data; boundary=XX", "model") == "asr"

    async def scenario():
        task = asyncio.ensure_future(call(app, "/v1/audio/transcriptions", form, b"multipart/form-data; boundary=XX"))
        await asyncio.sleep(0.3)
        assert not task.done()
        set_state(path, doc, "ready")
        return await task

    assert asyncio.run(scenario())[0]["status"] == 200 and inner.bodies == [form]


def test_past_its_hold_a_request_gets_503_with_retry_after(tmp_path):
    path, _ = state_file(tmp_path, hold_s=0.4)
    inner, app = held(tmp_path, path)
    sent = asyncio.run(call(app, "/v1/embeddings", b'{"model":"asr","input":"x"}'))
    start, body = sent[0], json.loads(sent[1]["body"])
    assert start["status"] == 503 and dict(start["headers"])[b"retry-after"] == b"10"
    assert body["error"]["message"].startswith(
        "asr is waking up (it was parked while idle) and was not ready after 0 s"
    )
    assert inner.bodies == []


def test_what_is_not_held(tmp_path):
    path, _ = state_file(tmp_path)
    inner, app = held(tmp_path, path)
    asyncio.run(call(app, "/v1/chat/completions", b'{"model":"chat"}'))  # an awake model
    asyncio.run(call(app, "/v1/chat/completions", b'{"model":"nobody"}'))  # unknown: LiteLLM words it
    asyncio.run(call(app, "/v1/chat/completions", b"not json"))
    sent: list[dict] = []

    async def health():  # GET routes (LiteLLM's /health, /v1/models) pass untouched
        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(m):
            sent.append(m)

        await app({"type": "http", "method": "GET", "path": "/health", "headers": []}, receive, send)

    asyncio.run(health())
    assert len(inner.bodies) == 4 and sent[0]["status"] == 200
    assert ops.take_requests(tmp_path, "wake") == []  # nothing woke
    # with a master key, a request without it wakes nothing (LiteLLM answers 401)
    inner2, keyed = held(tmp_path, path, master="sekrit")
    asyncio.run(call(keyed, "/v1/chat/completions", b'{"model":"asr"}'))
    assert inner2.bodies == [b'{"model":"asr"}'] and ops.take_requests(tmp_path, "wake") == []
    asyncio.run(call(keyed, "/v1/chat/completions", b'{"model":"asr"}', headers=[(b"authorization", b"Bearer nope")]))
    assert ops.take_requests(tmp_path, "wake") == []


def test_a_model_that_went_fatal_is_not_held(tmp_path):
    path, _ = state_file(tmp_path, state="fatal")
    inner, app = held(tmp_path, path)
    sent = asyncio.run(call(app, "/v1/chat/completions", b'{"model":"asr"}'))
    assert sent[0]["status"] == 200 and len(inner.bodies) == 1  # on to LiteLLM, which words the error
