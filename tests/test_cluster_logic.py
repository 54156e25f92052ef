"""A cluster profile's pure parts (issue 15): the hosts' section and its checks, each host's share, what the
entry watches, the membership watch's decisions, and the fast path's choice among replicas. No process."""

from __future__ import annotations

import pytest

from memoria_cli.core import cluster
from memoria_cli.core.errors import InputError
from memoria_cli.core.profile import parse_profile
from memoria_cli.plugins import members, ops
from memoria_cli.plugins import proxy_fastpath as fp

CHAT = {"name": "chat", "model": "Org/Chat", "kind": "chat", "aliases": ["Org/Chat-HF"], "hosts": ["b", "c"]}
EMBED = {"name": "embed", "model": "Org/Embed", "kind": "embedding"}
HOSTS = [
    {"name": "a", "address": "10.0.0.1", "entry": True},
    {"name": "b", "address": "10.0.0.2", "worker_port_base": 8401},
    {"name": "c", "address": "10.0.0.3", "port": 8300},
    {"name": "o", "address": "10.0.0.9", "port": 9000, "kind": "openai", "models": ["llama"], "key_env": "O_KEY"},
]


def profile(hosts=HOSTS, models=(CHAT, EMBED)):
    return parse_profile({"name": "cl", "hosts": hosts, "models": list(models)})


def test_each_host_runs_its_share_on_its_own_address():
    p = profile()
    a, b, c = (cluster.share(p, n) for n in "abc")
    assert [m.name for m in a.models] == ["embed"]  # no `hosts:`: every memoria host
    assert [m.name for m in b.models] == ["chat", "embed"] and b.worker_port_base == 8401
    assert (a.proxy.host, a.proxy.port, c.proxy.port) == ("10.0.0.1", 8200, 8300)
    assert cluster.placement(p) == {"chat": ["b", "c"], "embed": ["a", "b", "c"], "llama": ["o"]}
    assert cluster.aliases(p) == {"Org/Chat-HF": "chat"}


def test_only_the_entry_watches_and_an_openai_host_brings_its_own_key():
    p = profile()
    assert cluster.members(p, "b") == []
    got = {m.name: m for m in cluster.members(p, "a")}
    assert sorted(got) == ["b", "c", "o"]
    assert got["c"].base == "http://10.0.0.3:8300/v1" and got["c"].models == ("chat", "embed")
    assert got["b"].key_env == "LITELLM_MASTER_KEY"
    assert (got["o"].base, got["o"].models, got["o"].key_env) == ("http://10.0.0.9:9000/v1", ("llama",), "O_KEY")


@pytest.mark.parametrize(
    ("hosts", "models", "said"),
    [
        (HOSTS[1:], (EMBED,), "exactly one entry host"),
        ([*HOSTS, {"name": "z", "address": "x", "entry": True}], (EMBED,), "not 2: a, z"),
        ([*HOSTS, {"name": "b", "address": "x"}], (EMBED,), "host 'b' is listed twice"),
        (HOSTS, ({**CHAT, "hosts": ["o"]},), "chat is placed on 'o', which is not a memoria host here"),
        ([], (CHAT,), "chat names `hosts` but the profile has no `hosts:` section"),
        ([*HOSTS, {"name": "q", "address": "x", "kind": "openai"}], (EMBED,), "lists the model names it serves"),
    ],
)
def test_a_wrong_hosts_section_is_one_line_naming_it(hosts, models, said):
    with pytest.raises(InputError) as e:
        profile(hosts, models)
    assert said in e.value.message


def test_asking_for_a_host_that_is_not_there_names_the_ones_that_are():
    with pytest.raises(InputError) as e:
        cluster.share(profile(), "zz")
    assert e.value.message == "no host 'zz' in profile 'cl'" and e.value.hint == "choose one of: a, b, c"
    with pytest.raises(InputError) as e:
        cluster.share(profile(), "o")
    assert "an openai host" in e.value.message


WATCHED = [
    {"name": "b", "kind": "memoria", "base": "http://b/v1", "models": ["chat", "embed"], "key_env": "K"},
    {"name": "o", "kind": "openai", "base": "http://o/v1", "models": ["llama"], "key_env": ""},
]


def test_a_member_is_admitted_only_if_it_wants_the_key():
    w = members.Watch(WATCHED, misses=2)
    assert w.needs_guard_check("b") and not w.needs_guard_check("o")
    assert w.looked("b", members.Look(frozenset({"chat"}), guarded=False), 1.0) == ([], [])
    assert w.seen["b"].admitted is False and "without the cluster's key" in w.seen["b"].why
    assert w.looked("b", members.Look(frozenset({"chat", "other"}), guarded=True), 2.0) == (["chat"], [])
    assert w.seen["b"].admitted and not w.needs_guard_check("b")


def test_two_misses_take_a_member_out_and_one_good_look_brings_it_back():
    w = members.Watch(WATCHED, misses=2)
    w.looked("b", members.Look(frozenset({"chat", "embed"}), guarded=True), 1.0)
    assert w.looked("b", members.Look(None, "timeout"), 2.0) == ([], [])  # one miss: a slow look, not a dead host
    assert w.looked("b", members.Look(None, "timeout"), 3.0) == ([], ["chat", "embed"])
    assert w.report()[0]["in"] is False and w.report()[0]["why"] == "timeout"
    assert w.needs_guard_check("b")  # out: asked for the key again before it is back
    assert w.looked("b", members.Look(frozenset({"embed"}), guarded=True), 4.0) == (["embed"], [])
    assert w.looked("b", members.Look(frozenset({"chat"}), guarded=None), 5.0) == (["chat"], ["embed"])


def test_a_members_deployment_carries_an_id_the_fast_path_knows():
    d = members.deployment(WATCHED[0], "chat", "k")
    assert d["litellm_params"] == {"model": "hosted_vllm/chat", "api_base": "http://b/v1", "api_key": "k"}
    assert d["model_info"]["id"] == "memoria-member:b:chat" and d["model_info"]["id"].startswith(fp.MEMBER_PREFIX)
    assert members.root_of("http://10.0.0.2:8200/v1") == "http://10.0.0.2:8200"


class Router:
    def __init__(self, deployments):
        self.deployments = deployments

    def get_model_list(self, model_name=None):
        return [d for d in self.deployments if d["model_name"] == model_name]


def test_the_fast_path_skips_the_replicas_a_request_already_failed_on():
    local = {"model_name": "chat", "litellm_params": {"model": "hosted_vllm/chat", "api_base": "http://127.0.0.1:1/v1"}}
    local["model_info"] = {"id": "abc"}
    remote = members.deployment(WATCHED[0], "chat", "k")
    r = Router([local, remote])
    picked = {fp.pick_deployment(r, "chat").deployment for _ in range(60)}
    assert picked == {"abc", "memoria-member:b:chat"}
    only = fp.pick_deployment(r, "chat", frozenset({"abc"}))
    assert only.member and only.key == "k" and only.base == "http://b/v1"
    assert fp.pick_deployment(r, "chat", frozenset({"abc", "memoria-member:b:chat"})) is None
    t = fp.plan_request("/v1/chat/completions", b'{"model": "chat", "messages": []}', r, frozenset({"abc"}))
    assert (t.url, t.member, t.deployment) == ("http://b/v1/chat/completions", True, "memoria-member:b:chat")


def test_a_host_serves_what_is_ready_or_parked_with_a_policy():
    state = {
        "plan": {"workers": [{"name": "e", "idle": "sleep"}, {"name": "c", "idle": "never"}, {"name": "w"}]},
        "processes": {
            "e": {"state": "sleeping", "kind": "embedding"},
            "c": {"state": "ready", "kind": "chat"},
            "w": {"state": "backoff", "kind": "chat"},
            "proxy": {"state": "ready", "kind": "proxy"},
        },
    }
    assert ops.serving(state) == ["c", "e"]
    assert ops.serving(None) == []


def test_the_entrys_status_reads_each_hosts_own_words(tmp_path):
    from memoria_cli.run.cluster_status import read_members, rotation_of, workers_of

    body = {"state": {"processes": {"proxy": {"kind": "proxy", "state": "ready"}, "chat": {"state": "starting"}}}}
    assert workers_of({"kind": "memoria"}, body) == {"chat": "starting"}
    listed = {"data": [{"id": "a"}, {"id": "other"}]}
    assert workers_of({"kind": "openai", "models": ["a", "b"]}, listed) == {"a": "listed", "b": "missing"}
    assert rotation_of({"in": True, "why": ""}) == "in"
    assert rotation_of({"in": False, "why": "2 misses: ConnectTimeout"}) == "out: 2 misses: ConnectTimeout"
    assert rotation_of(None) == "unknown"
    members = tmp_path / "members.json"
    assert read_members(members) is None  # not an entry
    members.write_text("{half")
    assert read_members(members) is None
    members.write_text('{"members": [{"name": "b"}]}')
    assert read_members(members) == [{"name": "b"}]


def test_a_name_only_members_serve_is_unserved_while_none_of_them_has_it():
    w = members.Watch(WATCHED, misses=2)
    assert w.unserved() == {"chat": ["b"], "embed": ["b"], "llama": ["o"]}  # nobody looked at yet
    w.looked("b", members.Look(frozenset({"chat", "embed"}), guarded=True), 1.0)
    w.looked("o", members.Look(frozenset({"llama"})), 1.0)
    assert w.unserved() == {}
    w.looked("b", members.Look(frozenset({"embed"}), guarded=True), 2.0)  # b's chat restarting (a span, say)
    assert w.unserved() == {"chat": ["b"]}


def test_the_entry_answers_503_for_a_name_no_host_serves_now_and_passes_everything_else():
    """Not LiteLLM's 400 "invalid model name": the name is right, its hosts are out or starting it."""
    import asyncio
    import functools
    import json

    from memoria_cli.plugins import hold

    class Watcher:
        def __init__(self):
            self.env = {"LITELLM_MASTER_KEY": "k"}
            self.watch = members.Watch(WATCHED, misses=2)

        def router(self):
            r = Router([{"model_name": "embed"}])
            r.model_group_alias = {"Org/Chat-HF": "chat"}
            return r

    passed = []

    async def app(scope, receive, send):
        passed.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    watcher = Watcher()
    layer = members.Unserved(app, watcher, fp, functools.partial(hold.model_of, transcripts=None), hold.ROUTES)

    def post(model, key="k", path="/v1/chat/completions"):
        body = json.dumps({"model": model, "messages": []}).encode()
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": [(b"authorization", f"Bearer {key}".encode())],
        }
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(m):
            sent.append(m)

        asyncio.run(layer(scope, receive, send))
        head = dict(sent[0]["headers"])
        return sent[0]["status"], head.get(b"retry-after"), json.loads(sent[1]["body"])

    status, retry, body = post("Org/Chat-HF")  # an alias of chat, which only b serves, and b is not looked at yet
    assert (status, retry, body["error"]["type"]) == (503, b"10", "service_unavailable")
    assert body["error"]["message"].startswith("no host serves chat right now (b: out of rotation, or starting it)")
    assert post("embed")[0] == 200  # a local deployment serves it: passed on
    assert post("chat", key="wrong")[0] == 200 and post("unknown")[0] == 200  # LiteLLM words 401 and 400
    watcher.watch.looked("b", members.Look(frozenset({"chat", "embed"}), guarded=True), 1.0)
    watcher.watch.looked("o", members.Look(frozenset({"llama"})), 1.0)
    before = len(passed)
    assert post("chat")[0] == 200 and len(passed) == before + 1  # served again: passed on
