"""`memoria export`: the plan `up` runs, as Kubernetes manifests and production-stack values, checked by the
judges that will read them: the Kubernetes schemas (kubernetes-validate bundles them), vLLM's own argument
parser and memory code, LiteLLM's config loader, and the chart's documented values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from memoria_cli.core.errors import InputError, PlanError
from memoria_cli.core.inventory import describe
from memoria_cli.core.kinds import KINDS
from memoria_cli.core.model_facts import read_facts
from memoria_cli.core.plan import Plan
from memoria_cli.core.planner import plan
from memoria_cli.core.profile import Profile, load_profile
from memoria_cli.core.units import MiB
from memoria_cli.core.worker_spec import worker_spec
from memoria_cli.export.helm import production_stack_values
from memoria_cli.export.kubernetes import KubeOptions, manifests, proxy_config, to_yaml
from memoria_cli.export.shares import gpu_shares, requested_per_gpu, shared_cards, slice_kv_bytes
from memoria_cli.export.workloads import WORKER_PORT, k8s_name, workloads
from memoria_cli.run.stack import proxy_plugin_sources
from tests.helpers import litellm_validate, run_memoria
from tests.oracle import oracle_inputs, run_oracle, vllm_parse

DEFAULT = load_profile("default").always_awake()  # as `memoria export` plans it: nothing parks in a cluster
FACTS = {m.name: read_facts(m) for m in DEFAULT.models}
CARDS = ("T4", "L4", "A100", "2xL4", "2xH100")
K8S_VERSION = "1.33.0"  # a release kubernetes-validate 1.37 bundles
KEYS = json.loads((Path(__file__).parent / "data" / "production_stack_keys.json").read_text())


def planned(spec: str, profile: Profile = DEFAULT) -> Plan:
    return plan(profile, describe(spec), {m.name: FACTS[m.name] for m in profile.models})


def single(name: str) -> Profile:
    return Profile(name=name, models=[DEFAULT.model(name)])


def objects(spec: str, profile: Profile = DEFAULT, **opts: Any) -> list[dict[str, Any]]:
    p = planned(spec, profile)
    return manifests(p, profile, workloads(p, profile), KubeOptions(**opts), proxy_plugin_sources())


def values_for(p: Plan, profile: Profile = DEFAULT) -> dict[str, Any]:
    return production_stack_values(profile, workloads(p, profile))


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


# --------------------------------------------------------------------------------- Kubernetes manifests


@pytest.mark.parametrize("spec", CARDS)
@pytest.mark.parametrize("cache", ["pvc", "hostpath"])
def test_every_manifest_validates_against_the_kubernetes_schemas(spec, cache):
    objs = objects(spec, cache=cache, namespace="ai", storage_class="fast")
    assert [o["kind"] for o in objs].count("Deployment") == len(DEFAULT.models) + 1
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)  # strict: an unknown field is an error too
    assert all(o["metadata"]["namespace"] == "ai" for o in objs)
    # the validator can fail: the same Deployment with a misspelt field is refused
    bad = json.loads(json.dumps(of_kind(objs, "Deployment")[0]))
    bad["spec"]["template"]["spec"]["containers"][0]["comand"] = ["vllm"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_each_worker_runs_the_plans_own_command_line_in_its_pod():
    p = planned("2xH100")
    objs = manifests(p, DEFAULT, workloads(p, DEFAULT), KubeOptions(), proxy_plugin_sources())
    deployments = {d["metadata"]["name"]: d for d in of_kind(objs, "Deployment")}
    shares = gpu_shares(p)
    for w in p.workers:
        c = container(deployments[k8s_name(f"memoria-{w.name}")])
        local = worker_spec(w, DEFAULT.model(w.name), "vllm", None, "m", Path("/c"), Path("/s")).argv
        pod = list(local)
        pod[pod.index("--host") + 1] = "0.0.0.0"
        pod[pod.index("--port") + 1] = str(WORKER_PORT)
        pod[pod.index("--gpu-memory-utilization") + 1] = f"{shares[w.name].gmu:.4f}"
        assert c["command"] == pod  # the same flags `up` gives it, only its address and GPU share differ
        env = {e["name"]: e for e in c["env"]}
        assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "memoria-keys", "key": "worker-key"}
        assert "CUDA_VISIBLE_DEVICES" not in env  # the device plugin picks the pod's GPUs
        assert env["HF_HOME"]["value"] == "/models/hf"


def test_workers_sharing_a_card_ask_hami_for_a_slice_that_holds_their_plan():
    for spec in CARDS:
        p = planned(spec)
        shares, shared = gpu_shares(p), shared_cards(p)
        for g in p.devices:
            on = [w for w in p.workers if g.index in w.devices]
            if g.index in shared:  # HAMi hands out slices of the card's memory: they must add up
                assert sum(shares[w.name].slice_mib or 0 for w in on) * MiB <= g.total, spec
        for w in p.workers:
            s = shares[w.name]
            if not shared.intersection(w.devices):
                assert s.slice_mib is None and s.gmu == w.gmu  # a card of its own: the plan's utilization
                continue
            # vLLM asks for ceil(slice x util) and must find it free beside its CUDA context
            assert math.ceil(s.slice_bytes * s.gmu) <= s.slice_bytes - w.cuda_context
            assert math.ceil(s.slice_bytes * s.gmu) >= requested_per_gpu(w)
            kv = slice_kv_bytes(w, s)  # the plan's KV cache, give or take the utilization's rounding
            assert 0 <= kv - w.kv_bytes // w.tensor_parallel <= s.slice_bytes // 10_000 + 1
    chat = single("qwen3-4b-thinking-fp8")
    alone = planned("L4", chat)
    c = container(of_kind(manifests(alone, chat, workloads(alone, chat), KubeOptions(), {}), "Deployment")[0])
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "1"}  # no HAMi needed
    assert c["command"][c["command"].index("--gpu-memory-utilization") + 1] == f"{alone.workers[0].gmu:.4f}"


def test_probes_take_the_profiles_start_up_budget_and_liveness_policy():
    objs = objects("L4")
    sup = DEFAULT.supervision
    for d in of_kind(objs, "Deployment")[:-1]:
        c = container(d)
        s = c["startupProbe"]
        assert s["periodSeconds"] * s["failureThreshold"] >= DEFAULT.startup_timeout
        assert (s["periodSeconds"] * (s["failureThreshold"] - 1)) < DEFAULT.startup_timeout
        live = c["livenessProbe"]
        assert (live["periodSeconds"], live["failureThreshold"]) == (sup.live_interval, sup.live_misses)
        assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == sup.grace
        assert d["spec"]["strategy"] == {"type": "Recreate"}


def test_no_key_is_written_anywhere_and_workers_admit_only_the_proxy(monkeypatch):
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-must-not-leak-1234")
    objs = objects("L4")
    text = to_yaml(objs, "")
    assert "sk-must-not-leak" not in text
    cfg = yaml.safe_load(of_kind(objs, "ConfigMap")[0]["data"]["config.yaml"])
    assert cfg["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    keys = [m["litellm_params"]["api_key"] for m in cfg["model_list"]]
    assert keys == [f"os.environ/MEMORIA_WORKER_KEY_{i}" for i in range(4)]
    proxy = container(of_kind(objs, "Deployment")[-1])
    env = {e["name"]: e for e in proxy["env"]}
    for name in ("LITELLM_MASTER_KEY", *(f"MEMORIA_WORKER_KEY_{i}" for i in range(4))):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "memoria-keys"
    assert env["MEMORIA_LOOPBACK_ONLY"]["value"] == "0"
    assert proxy["command"][:2] == ["python", "/etc/memoria/memoria_proxy.py"]
    assert proxy["command"][proxy["command"].index("--host") + 1] == "0.0.0.0"
    (policy,) = of_kind(objs, "NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": of_kind(objs, "Deployment")[-1]["spec"]["selector"]["matchLabels"]}}
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": WORKER_PORT}]


def test_the_proxy_routes_every_name_to_its_workers_service():
    p = planned("L4")
    cfg = proxy_config(p, DEFAULT, workloads(p, DEFAULT))
    bases = {m["model_name"]: m["litellm_params"]["api_base"] for m in cfg["model_list"]}
    assert bases == {w.name: f"http://{k8s_name('memoria-' + w.name)}:8000/v1" for w in p.workers}
    services = {s["metadata"]["name"] for s in of_kind(objects("L4"), "Service")}
    assert {b.split("/")[2].split(":")[0] for b in bases.values()} <= services
    aliases = cfg["router_settings"]["model_group_alias"]
    assert aliases["Qwen/Qwen3-4B-Thinking-2507-FP8"] == "qwen3-4b-thinking-fp8"


def test_in_front_of_the_charts_router_only_the_proxy_is_written():
    router = "http://vllm-router-service/v1"
    objs = objects("L4", router=router)
    assert [o["kind"] for o in objs] == ["ConfigMap", "Deployment", "Service"]
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    cfg = yaml.safe_load(objs[0]["data"]["config.yaml"])
    assert {m["litellm_params"]["api_base"] for m in cfg["model_list"]} == {router}
    # the names the chart's engines serve (production_stack_values' --served-model-name) are the ones routed
    served = {m["vllmConfig"]["extraArgs"][1] for m in values_for(planned("L4"))["servingEngineSpec"]["modelSpec"]}
    assert {m["litellm_params"]["model"].removeprefix("hosted_vllm/") for m in cfg["model_list"]} == served


def test_names_are_dns_labels_and_a_clash_is_refused():
    assert k8s_name("memoria-qwen3-embedding-0.6b") == "memoria-qwen3-embedding-0-6b"
    assert k8s_name("9lives") == "m-9lives" and len(k8s_name("x" * 100)) == 63
    a = DEFAULT.model("qwen3-embedding-0.6b")
    clash = Profile(name="c", models=[a, a.model_copy(update={"name": "qwen3-embedding-0_6b", "aliases": []})])
    facts = {"qwen3-embedding-0.6b": FACTS[a.name], "qwen3-embedding-0_6b": FACTS[a.name]}
    with pytest.raises(PlanError, match="same Kubernetes name 'memoria-qwen3-embedding-0-6b'"):
        workloads(plan(clash, describe("A100"), facts), clash)


def test_a_cpu_plan_is_refused_with_what_to_do():
    from memoria_cli.core.inventory import Cpu, Inventory

    inv = Inventory(gpus=(), cpu=Cpu(cores=8, total=64 << 30, available=60 << 30))
    p = plan(DEFAULT, inv, FACTS)
    with pytest.raises(InputError, match="the CPU engine") as e:
        workloads(p, DEFAULT)
    assert "--gpus L4" in (e.value.hint or "")


# ------------------------------------------------------------------------------- production-stack values


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Every key path of the values (array items as []), the way tests/tools/production_stack_keys.py names them."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{path}.{k}" if path else k
            out[p] = v
            out.update(flatten(v, p))
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)):
                out.update(flatten(v, f"{path}[]"))
    return out


JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}


@pytest.mark.parametrize("spec", CARDS)
def test_every_value_is_a_documented_key_of_the_chart_with_its_type(spec):
    values = values_for(planned(spec))
    table = KEYS["keys"]
    opaque = ("servingEngineSpec.modelSpec[].env[]",)  # Kubernetes EnvVar objects: the chart passes them on
    checked = 0
    for path, v in flatten(values).items():
        if path.startswith(opaque):
            continue
        assert path in table, f"{path} is not a key of the chart's values (commit {KEYS['commit'][:12]})"
        entry = table[path]
        assert entry["in_values_yaml"], path
        types = tuple(JSON_TYPES[t] for t in entry["types"])
        assert isinstance(v, types) and not (isinstance(v, bool) and bool not in types), (path, v, entry["types"])
        if "enum" in entry:
            assert v in entry["enum"], (path, v)
        checked += 1
    assert checked > 40


def test_prefix_caching_is_said_outright_and_shared_cards_get_their_mib():
    p = planned("L4")
    models = {m["name"]: m for m in values_for(p)["servingEngineSpec"]["modelSpec"]}
    shares = gpu_shares(p)
    for w in p.workers:
        m = models[k8s_name(w.name)]
        want = KINDS[w.kind].prefix_caching and "--no-enable-prefix-caching" not in DEFAULT.model(w.name).extra_args
        assert m["vllmConfig"]["enablePrefixCaching"] is want, w.name
        assert m["requestGPUMem"] == m["limitGPUMem"] == str(shares[w.name].slice_mib)
        assert m["tag"] == "v0.32.0" and m["repository"] == "vllm/vllm-openai"
        assert "--no-enable-prefix-caching" not in m["vllmConfig"]["extraArgs"]
    assert models["hunyuan-ocr"]["modelRevision"] == DEFAULT.model("hunyuan-ocr").revision
    served = models["qwen3-4b-thinking-fp8"]["vllmConfig"]["extraArgs"]
    i = served.index("--served-model-name")
    assert served[i + 1 : i + 3] == ["qwen3-4b-thinking-fp8", "Qwen/Qwen3-4B-Thinking-2507-FP8"]


def chart_argv(model: dict[str, Any], container_port: int) -> list[str]:
    """The command line the chart builds from a modelSpec entry, line by line as
    helm/templates/deployment-vllm-multi.yaml writes it (production-stack at the commit of the key table)."""
    argv = ["vllm", "serve", model["modelURL"], "--host", "0.0.0.0", "--port", str(container_port)]
    if model.get("enableLoRA"):
        argv.append("--enable-lora")
    c = model.get("vllmConfig")
    if c is not None:
        if "enableChunkedPrefill" in c:
            argv.append("--enable-chunked-prefill" if c["enableChunkedPrefill"] else "--no-enable-chunked-prefill")
        argv.append("--enable-prefix-caching" if c.get("enablePrefixCaching") else "--no-enable-prefix-caching")
        for key, flag in [
            ("maxModelLen", "--max-model-len"),
            ("dtype", "--dtype"),
            ("tensorParallelSize", "--tensor-parallel-size"),
            ("maxNumSeqs", "--max-num-seqs"),
            ("gpuMemoryUtilization", "--gpu_memory_utilization"),
            ("maxLoras", "--max_loras"),
            ("runner", "--runner"),
            ("convert", "--convert"),
        ]:
            if key in c:
                argv += [flag, str(c[key])]
        argv += [str(a) for a in c.get("extraArgs", [])]
    if model.get("modelRevision"):
        argv += ["--revision", model["modelRevision"]]
    return argv


# ------------------------------------------------------------------ the judges that need the runtimes


@pytest.mark.medium
def test_vllm_parses_every_exported_command_line_to_the_plans_engine():
    """Each pod's argv and the chart's argv through vLLM's own parser: both give the engine the plan gives."""
    argvs, expect = [], []
    for spec in CARDS:
        p = planned(spec)
        objs = manifests(p, DEFAULT, workloads(p, DEFAULT), KubeOptions(), {})
        values = values_for(p)["servingEngineSpec"]
        for w, d, m in zip(p.workers, of_kind(objs, "Deployment"), values["modelSpec"], strict=False):
            argvs += [container(d)["command"], chart_argv(m, values["containerPort"])]
            expect.append((w, gpu_shares(p)[w.name]))
    results = vllm_parse(argvs)
    same = ("model_tag", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "block_size", "revision")
    same += ("tensor_parallel_size", "runner", "reasoning_parser", "kv_cache_dtype", "shutdown_timeout", "host", "port")
    for i, (w, share) in enumerate(expect):
        pod, chart = results[2 * i], results[2 * i + 1]
        assert pod["ok"] and chart["ok"], (argvs[2 * i], pod, argvs[2 * i + 1], chart)
        a, b = pod["args"], chart["args"]
        assert a["gpu_memory_utilization"] == b["gpu_memory_utilization"] == pytest.approx(share.gmu, abs=1e-4)
        assert a["max_model_len"] == w.context and a["port"] == WORKER_PORT and a["host"] == "0.0.0.0"
        assert {k: a[k] for k in same} == {k: b[k] for k in same}, w.name
        entry = DEFAULT.model(w.name)
        assert b["served_model_name"] == [w.name, *entry.aliases] and a["served_model_name"] == [w.name]
        explicit = a["enable_prefix_caching"]  # None: vLLM's default for the model, which the chart must say
        assert b["enable_prefix_caching"] is (KINDS[w.kind].prefix_caching if explicit is None else explicit)


@pytest.mark.medium
def test_vllm_admits_each_worker_in_its_hami_slice_and_agrees_on_prefix_caching():
    """vLLM's memory code on a card as big as the slice (HAMi reports the cap as the device's total): the
    start-up check passes, the KV cache admits the planned context and the worker stays inside the slice."""
    rows, meta = [], []
    for spec in CARDS:
        p = planned(spec)
        inv = describe(spec)
        shares = gpu_shares(p)
        for w, row in zip(p.workers, oracle_inputs(p, inv, FACTS), strict=True):
            s = shares[w.name]
            if s.slice_mib is not None:
                row = {
                    **row,
                    "total": s.slice_bytes,
                    "free_at_start": s.slice_bytes - w.cuda_context,
                    "gmu": s.gmu,
                    "kv_bytes": slice_kv_bytes(w, s),
                }
            rows.append(row)
            meta.append((spec, w, s))
    results, _ = run_oracle(rows)
    sliced = 0
    for (spec, w, s), r in zip(meta, results, strict=True):
        assert r["ok"], (spec, w.name, r)
        assert r["prefix_caching"] is KINDS[w.kind].prefix_caching, w.kind  # the kinds table is vLLM's default
        if s.slice_mib is None:
            continue
        sliced += 1
        assert r["requested"] <= s.slice_bytes - w.cuda_context
        for sim in r["simulated"].values():
            assert sim["admitted"] and sim["held"] <= s.slice_bytes, (spec, w.name, sim)
    assert sliced >= 10


@pytest.mark.medium
def test_litellm_loads_the_exported_proxy_config(tmp_path):
    """(The --router variant differs only in api_base: test_in_front_of_the_charts_router_... checks it.)"""
    (cm,) = of_kind(objects("L4"), "ConfigMap")
    for name, text in cm["data"].items():  # the ConfigMap's files, as the pod's volume holds them
        (tmp_path / name).write_text(text)
    proc = litellm_validate(tmp_path / "config.yaml", {f"MEMORIA_WORKER_KEY_{i}": "wk" for i in range(4)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "LiteLLM: config OK (8 models)" in out, out[-3000:]


@pytest.mark.medium
def test_the_command_writes_files_and_never_replaces_one_it_did_not_write(tmp_path):
    out = tmp_path / "k8s"
    r = run_memoria("export", "kubernetes", "--gpus", "L4", "-o", str(out), "-n", "ai")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 16 and "memoria-proxy.configmap.yaml" in files and "memoria.service.yaml" in files
    assert r.stdout.strip() == f"wrote 16 manifests to {out}"
    mine = out / "notes.yaml"
    mine.write_text("kind: mine\n")
    victim = out / "memoria-hunyuan-ocr.deployment.yaml"
    victim.write_text("# my own edit\n")
    r = run_memoria("export", "kubernetes", "--gpus", "L4", "-o", str(out))
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "was not written by memoria export" in r.stderr
    assert victim.read_text() == "# my own edit\n" and mine.read_text() == "kind: mine\n"
    victim.unlink()
    # a smaller profile's export replaces the last one's files, removes those it no longer has, keeps the user's
    r = run_memoria("export", "kubernetes", "--gpus", "L4", "-o", str(out), "-p", str(single_profile(tmp_path)))
    assert r.returncode == 0 and "wrote 7 manifests" in r.stdout and "removed 8 from the last export" in r.stdout
    kept = [f for f in files if "qwen3-4b" in f or f.startswith(("memoria.", "memoria-proxy", "memoria-workers"))]
    assert sorted(p.name for p in out.iterdir()) == sorted(["notes.yaml", *kept])
    values = tmp_path / "values.yaml"
    assert run_memoria("export", "helm", "--gpus", "2xL4", "-o", str(values)).returncode == 0
    assert yaml.safe_load(values.read_text())["servingEngineSpec"]["modelSpec"][0]["tag"] == "v0.32.0"


def single_profile(tmp_path: Path) -> Path:
    data = yaml.safe_load(Path(DEFAULT.source).read_text())
    data["models"] = [m for m in data["models"] if m["name"] == "qwen3-4b-thinking-fp8"]
    path = tmp_path / "chat-only.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
