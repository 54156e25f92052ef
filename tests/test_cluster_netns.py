"""Three memoria hosts in three network namespaces, real `vllm serve` (CPU build) on two of them, the real
LiteLLM proxy on each (issue 15). tests/tools/netns.py makes the namespaces: each host has its own loopback
and one address on a bridge (198.18.0.2-4), so what is bound to 127.0.0.1 on one host cannot be reached from
another, as between machines.

Host `entry` runs no model: clients use its proxy. Host `b` runs the embedding, chat and transcription
models; host `c` a second replica of chat and the vision model. The API guide's tests (tests/contract/) run
against the entry from inside its namespace; then what the issue's "done when" asks with real workers: vLLM's
own request counters show chat spread over both replicas; the worker ports of a host are unreachable from the
others and its proxy wants the key; a host whose link is cut leaves the rotation within seconds with no
request lost and comes back when the link does; `kill -9` of a replica's worker under load loses no request.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import time

import pytest
import yaml

from tests.helpers import ROOT, build_tiny_models, host_env, tiny_models_profile, wait_for
from tests.tools import netns

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(netns.available() is not None, reason=str(netns.available())),
]
KEY = "netns-cluster-secret"
HOSTS = ["entry", "b", "c"]
PLACE = {"tiny-embed": ["b"], "tiny-chat": ["b", "c"], "tiny-whisper": ["b"], "tiny-vl": ["c"]}
CHAT = {"model": "tiny-chat", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


_env = functools.partial(host_env, key=KEY)  # a host's environment: its own home, the cluster's key


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("netns-cluster")
    models = build_tiny_models()
    data = yaml.safe_load(tiny_models_profile(root / "tiny.yaml", models, 8300).read_text())
    with netns.Lab(HOSTS) as net:
        data["proxy"] = {"port": 8200}
        data["hosts"] = [
            {"name": h, "address": net.address[h], **({"entry": True} if h == "entry" else {})} for h in HOSTS
        ]
        for m in data["models"]:
            m["hosts"] = PLACE[m["name"]]
        profile = root / "cluster.yaml"
        profile.write_text(yaml.safe_dump(data, sort_keys=False))
        lab = {"net": net, "root": root, "profile": profile, "url": f"http://{net.address['entry']}:8200"}
        with net.cluster(profile, [["b", "c"], ["entry"]], lambda h: _env(root, h)) as took:
            print(f"\nnetns cluster: up on b and c, then the entry, {took:.1f} s to all ready")
            wait_for(lambda: in_rotation(lab) == {"b": True, "c": True}, 60)
            yield lab


def state(lab: dict, host: str) -> dict:
    return lab["net"].status(host, _env(lab["root"], host))


def in_rotation(lab: dict) -> dict[str, bool]:
    r = lab["net"].http("entry", "GET", lab["url"] + "/ui/api/members", headers={"Authorization": f"Bearer {KEY}"})
    return {m["name"]: m["in"] for m in json.loads(r["body"])["members"]} if r["status"] == 200 else {}


def chats_served(lab: dict, host: str) -> float:
    """vLLM's own count of finished requests on `host`'s chat worker, read on that host."""
    port = state(lab, host)["processes"]["tiny-chat"]["port"]
    r = lab["net"].http(host, "GET", f"http://127.0.0.1:{port}/metrics")
    assert r["status"] == 200, r
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in r["body"].splitlines()
        if line.startswith("vllm:request_success_total{")
    )


def test_the_api_guide_holds_through_the_entry(lab):
    """tests/contract/test_api_guide.py, run from inside the entry's namespace against the entry's proxy: every
    model is elsewhere, so every call crosses a host (the two tests about the no-key mode skip: a cluster has a
    key)."""
    stack = json.dumps({"url": lab["url"] + "/v1", "key": KEY})
    r = lab["net"].run(
        "entry",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--basetemp",
        str(lab["root"] / "contract"),
        str(ROOT / "tests" / "contract" / "test_api_guide.py"),
        env={"MEMORIA_TEST_STACK": stack, "PYTHONPATH": str(ROOT)},
        timeout=900,
    )
    tail = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0, r.stdout[-6000:]
    passed = re.search(r"(\d+) passed, 2 skipped", tail)
    assert passed and int(passed[1]) >= 20, tail


def test_chat_spreads_over_both_replicas_by_vllms_own_counters(lab):
    before = {h: chats_served(lab, h) for h in ("b", "c")}
    got = lab["net"].burst("entry", [lab["url"] + "/v1/chat/completions"], CHAT, KEY, count=40, threads=4)
    assert got["seen"] == {"200": 40}, got["seen"]
    served = {h: chats_served(lab, h) - before[h] for h in ("b", "c")}
    print(f"\n40 chats through the entry: vLLM's request_success_total rose by {served}")
    assert sum(served.values()) == 40 and min(served.values()) >= 8, served  # <= 8 of 40: odds below 1 in 10^5


def test_worker_ports_stay_on_their_host_and_a_member_wants_the_key(lab):
    net, b = lab["net"], lab["net"].address["b"]
    ports = {n: p["port"] for n, p in state(lab, "b")["processes"].items() if n != "proxy"}
    assert sorted(ports) == ["tiny-chat", "tiny-embed", "tiny-whisper"]
    for port in ports.values():
        assert net.connects("b", "127.0.0.1", port)  # listening, on b's own loopback
        assert not net.connects("entry", b, port) and not net.connects("c", b, port)
    assert net.connects("entry", b, 8200)
    listening = net.run("b", "ss", "-Hltn").stdout.split("\n")
    exposed = {line.split()[3] for line in listening if line.strip()} - {f"{b}:8200"}
    assert all(a.startswith(("127.0.0.1:", "[::1]:")) for a in exposed), exposed
    models = f"http://{b}:8200/v1/models"
    assert net.http("entry", "GET", models)["status"] == 401
    assert net.http("entry", "GET", models, headers={"Authorization": "Bearer wrong"})["status"] == 401
    assert net.http("entry", "GET", models, headers={"Authorization": f"Bearer {KEY}"})["status"] == 200


def test_a_cut_link_leaves_the_rotation_and_comes_back(lab):
    net = lab["net"]
    wait_for(lambda: in_rotation(lab) == {"b": True, "c": True}, 30)
    with net.load("entry", [lab["url"] + "/v1/chat/completions"], CHAT, KEY) as load:
        time.sleep(2)
        net.cut("b")
        t0 = time.monotonic()
        try:
            wait_for(lambda: in_rotation(lab).get("b") is False, 20, 0.2)
            out_after = time.monotonic() - t0
            time.sleep(3)
        finally:
            net.mend("b")
        t1 = time.monotonic()
        wait_for(lambda: in_rotation(lab).get("b") is True, 20, 0.2)
        back_after = time.monotonic() - t1
        time.sleep(2)
    print(f"\ncut link: b out after {out_after:.1f} s, back {back_after:.1f} s after mending; load {load.seen}")
    assert out_after < 8 and back_after < 8
    assert set(load.seen) == {"200"}, load.seen  # what was caught on the cut link was asked again on c


def test_kill9_of_a_replicas_worker_under_load_loses_no_request(lab):
    wait_for(lambda: in_rotation(lab) == {"b": True, "c": True}, 30)
    worker = state(lab, "c")["processes"]["tiny-chat"]["pid"]
    with lab["net"].load("entry", [lab["url"] + "/v1/chat/completions"], CHAT, KEY) as load:
        time.sleep(2)
        os.kill(worker, signal.SIGKILL)
        wait_for(
            lambda: (p := state(lab, "c")["processes"]["tiny-chat"])["state"] == "ready" and p["pid"] != worker, 300, 1
        )
        time.sleep(2)
    print(f"\nkill -9 of c's vLLM chat worker: load {load.seen}")
    assert set(load.seen) == {"200"} and load.seen["200"] > 20, load.seen
