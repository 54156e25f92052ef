"""/metrics and the status page's routes (plugins/ops.py): the text format, the relabelling, memoria's gauges,
the routes and their key, against a state file and an in-process stand-in for a worker's /metrics. (The real
stack: tests/test_ops_real.py, the keyed stack in tests/contract/, the browser in tests/test_demo.py.)"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from memoria_cli.plugins import ops
from memoria_cli.plugins import proxy_fastpath as fp

VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="chat"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="chat"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="chat"} 0.25
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="chat"} 7.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="chat"} 3.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",engine="0",kv_cache_size_tokens="8192",num_gpu_blocks="512"} 1.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="chat"} 4.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="chat"} 10.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="chat"} 10.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="chat"} 3.5
"""


def test_labels_go_in_front_and_a_samples_own_labels_win():
    assert ops.with_labels('x{a="1"} 2.0', {"model": "m", "a": "mine"}) == 'x{model="m",a="1"} 2.0'
    assert ops.with_labels("up 1", {"host": "h"}) == 'up{host="h"} 1'
    assert ops.with_labels('x{a="q\\"}"} 3 1700000000', {"m": 'a"b'}) == 'x{m="a\\"b",a="q\\"}"} 3 1700000000'
    assert ops.with_labels("not a sample", {"m": "x"}) is None


def test_families_from_several_workers_are_merged_with_one_help_and_type():
    fams = ops.Families()
    fams.add(VLLM_TEXT, {"model": "chat", "worker": "chat", "host": "h"})
    fams.add(VLLM_TEXT.replace('"chat"', '"embed"'), {"model": "embed", "worker": "embed", "host": "h"})
    text = fams.text()
    lines = text.splitlines()
    assert lines.count("# TYPE vllm:num_requests_running gauge") == 1
    assert lines.count("# TYPE vllm:e2e_request_latency_seconds histogram") == 1
    i = lines.index("# TYPE vllm:num_requests_running gauge")
    assert lines[i - 1].startswith("# HELP vllm:num_requests_running ")
    assert lines[i + 1 : i + 3] == [
        'vllm:num_requests_running{model="chat",worker="chat",host="h",engine="0",model_name="chat"} 2.0',
        'vllm:num_requests_running{model="embed",worker="embed",host="h",engine="0",model_name="embed"} 2.0',
    ]
    # a family's samples stay together: each histogram's series follow its TYPE line, both workers' alike
    j = lines.index("# TYPE vllm:e2e_request_latency_seconds histogram")
    assert all(ln.startswith("vllm:e2e_request_latency_seconds_") for ln in lines[j + 1 : j + 9])
    assert ops.samples(text) == ops.samples(text)  # parses back
    assert len(ops.samples(text)) == 2 * len(ops.samples(VLLM_TEXT))


def test_what_the_page_reads_of_a_workers_metrics():
    assert ops.worker_figures(VLLM_TEXT) == {
        "running": 2.0,
        "waiting": 1.0,
        "kv_usage": 0.25,
        "answered": 10.0,
        "kv_tokens": 512 * 16,
    }


def state_doc(tmp_path: Path) -> dict:
    log = tmp_path / "chat.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    return {
        "phase": "running",
        "profile": "demo",
        "engine": "cuda",
        "processes": {
            "chat": {
                "state": "ready",
                "kind": "chat",
                "port": 0,
                "restarts": 2,
                "ready_at": 1000.0,
                "log": str(log),
                "memory": 5 * 2**30,
            },
            "proxy": {"state": "ready", "kind": "proxy", "port": 8200, "restarts": 0},
        },
        "plan": {
            "workers": [
                {
                    "name": "chat",
                    "kind": "chat",
                    "kv_bytes": 2**30,
                    "fixed": 4 * 2**30,
                    "weights": 3 * 2**30,
                    "context": 8192,
                    "kv_tokens": 4096,
                    "devices": [0],
                }
            ],
            "devices": [
                {"index": 0, "name": "NVIDIA L4", "total": 24 * 2**30, "planned": 5 * 2**30, "free": 23 * 2**30}
            ],
        },
    }


def test_memorias_gauges_say_state_restarts_plan_and_what_vllm_got(tmp_path):
    text = ops.memoria_metrics(state_doc(tmp_path), {"chat": {"kv_tokens": 8192.0}}, "h1", now=1060.0)
    got = {(n, tuple(sorted(lb.items()))): v for n, lb, v in ops.samples(text)}
    chat = (("host", "h1"), ("kind", "chat"), ("model", "chat"), ("worker", "chat"))
    assert got[("memoria_up", (("engine", "cuda"), ("host", "h1"), ("profile", "demo")))] == 1
    assert got[("memoria_worker_state", tuple(sorted((*chat, ("state", "ready")))))] == 1
    assert got[("memoria_worker_state", tuple(sorted((*chat, ("state", "fatal")))))] == 0
    assert got[("memoria_worker_restarts_total", chat)] == 2
    assert got[("memoria_worker_scrape_up", chat)] == 1
    assert got[("memoria_worker_ready_seconds", chat)] == 60
    assert got[("memoria_worker_memory_bytes", tuple(sorted((*chat, ("memory", "gpu")))))] == 5 * 2**30
    assert got[("memoria_worker_budget_bytes", chat)] == 5 * 2**30
    assert got[("memoria_worker_kv_cache_tokens", tuple(sorted((*chat, ("source", "plan")))))] == 4096
    assert got[("memoria_worker_kv_cache_tokens", tuple(sorted((*chat, ("source", "vllm")))))] == 8192
    assert got[("memoria_worker_kv_cache_ratio", chat)] == 2.0
    assert got[("memoria_gpu_total_bytes", (("device", "0"), ("host", "h1"), ("name", "NVIDIA L4")))] == 24 * 2**30
    assert "# TYPE memoria_worker_restarts_total counter" in text
    assert ops.memoria_metrics(None, {}, "h1", 0.0) == (
        "# HELP memoria_up 1 while memoria's supervisor runs the stack\n# TYPE memoria_up gauge\n"
        'memoria_up{host="h1"} 0\n'
    )


def test_a_logs_tail_reads_only_its_end(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert ops.log_tail(str(log), 3) == ["line 4997", "line 4998", "line 4999"]
    assert ops.log_tail(str(log), 3, limit=20) == ["line 4998", "line 4999"]  # the cut first line is dropped
    assert ops.log_tail(str(tmp_path / "none.log")) == []


def test_restart_requests_are_one_format_for_both_sides(tmp_path):
    from memoria_cli.core.home import Home

    home = Home(tmp_path, tmp_path / "rt")
    ops.post_request(tmp_path, "restart", "chat")  # the page's button
    ops.post_request(home.root, "restart", "embed")  # `memoria restart embed`
    ops.post_request(home.root, "wake", "embed")  # a request held at the proxy
    ops.post_request(home.root, "wake", "embed")  # and another: one wake
    assert ops.take_requests(home.root, "restart") == ["chat", "embed"]
    assert ops.take_requests(home.root, "restart") == []  # consumed
    assert ops.take_requests(home.root, "wake") == ["embed"]


class Worker(BaseHTTPRequestHandler):
    def do_GET(self):
        body = VLLM_TEXT.encode() if self.path == "/metrics" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def worker_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Worker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def call(app, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        await app({"type": "http", "method": method, "path": path, "headers": headers or []}, receive, send)
        if app._session is not None:
            await app._session.close()

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


class Inner:
    called = 0

    async def __call__(self, scope, receive, send):
        Inner.called += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_the_routes_with_a_key(tmp_path, worker_port):
    doc = state_doc(tmp_path)
    doc["processes"]["chat"]["port"] = worker_port
    state = tmp_path / "state.json"
    state.write_text(json.dumps(doc))
    app = ops.ops(Inner(), fp.key_matches, {ops.STATE_ENV: str(state), "LITELLM_MASTER_KEY": "sk-1"})
    key = [(b"authorization", b"Bearer sk-1")]
    status, headers, body = call(app, "GET", "/metrics")
    assert status == 401
    status, headers, body = call(app, "GET", "/metrics", key)
    assert status == 200 and headers[b"content-type"] == ops.CONTENT_TYPE
    text = body.decode()
    assert f'vllm:num_requests_running{{model="chat",worker="chat",host="{app.host}",engine="0"' in text
    assert f'memoria_worker_scrape_up{{worker="chat",model="chat",kind="chat",host="{app.host}"}} 1' in text
    status, headers, body = call(app, "GET", "/ui")  # the page holds no data: served without the key
    assert status == 200 and b"<title>memoria</title>" in body
    assert b"frame-ancestors 'none'" in headers[b"content-security-policy"]
    assert call(app, "GET", "/ui/api/status")[0] == 401
    status, _, body = call(app, "GET", "/ui/api/status", key)
    doc = json.loads(body)
    assert status == 200 and doc["figures"]["chat"]["running"] == 2.0 and doc["logs"]["chat"][-1] == "line 99"
    assert call(app, "POST", "/ui/api/restart/nobody", key)[0] == 404
    assert call(app, "POST", "/ui/api/restart/chat")[0] == 401
    assert call(app, "POST", "/ui/api/restart/chat", key)[0] == 202
    assert ops.take_requests(tmp_path, "restart") == ["chat"]
    before = Inner.called
    assert call(app, "GET", "/v1/models")[0] == 204 and Inner.called == before + 1  # everything else passes


def test_a_worker_that_does_not_answer_is_left_out_and_said_so(tmp_path):
    doc = state_doc(tmp_path)
    doc["processes"]["chat"]["port"] = 9  # discard: nothing listens
    state = tmp_path / "state.json"
    state.write_text(json.dumps(doc))
    app = ops.ops(Inner(), fp.key_matches, {ops.STATE_ENV: str(state)})
    status, _, body = call(app, "GET", "/metrics")
    assert status == 200 and "vllm:" not in body.decode()
    assert 'memoria_worker_scrape_up{worker="chat",model="chat",kind="chat",host=' in body.decode()
    assert body.decode().split('memoria_worker_scrape_up{worker="chat"')[1].split("\n")[0].endswith(" 0")
    state.write_text("{half")
    status, _, body = call(app, "GET", "/metrics")
    assert status == 200 and body.decode().endswith(" 0\n")  # memoria_up 0: no state to read


def test_the_states_listed_are_the_supervisors():
    """ops.py cannot import memoria (it runs in LiteLLM's interpreter): its copy of the states must match."""
    from memoria_cli.run.supervisor import S

    assert set(ops.STATES) == {s.value for s in S} and len(ops.STATES) == len(S)
