"""Auth on (LITELLM_MASTER_KEY set): requests without the key get 401, not a 500 or "No connected db" 400;
and an upstream failure reaches the SDK as an APIError with a useful message. Its own one-worker stack."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest
from openai import APIError, AuthenticationError, OpenAI

from tests.helpers import DEFAULT_RUNTIMES, build_tiny_models, free_ports, run_memoria, write_profile

pytestmark = pytest.mark.slow
KEY = "sk-memoria-test-7d1f0c2e"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    models = build_tiny_models()
    tmp = tmp_path_factory.mktemp("auth")
    base = free_ports(2)
    profile = write_profile(
        tmp / "auth.yaml",
        [{"name": "tiny-embed", "model": str(models / "tiny-embed"), "kind": "embedding"}],
        port_base=base,
    )
    env = {"MEMORIA_HOME": str(tmp / "home"), "MEMORIA_RUNTIMES": str(DEFAULT_RUNTIMES), "LITELLM_MASTER_KEY": KEY}
    r = run_memoria("up", "-d", "-p", str(profile), env=env, timeout=600)
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        yield {"url": f"http://127.0.0.1:{base - 1}/v1", "env": env}
    finally:
        run_memoria("down", env=env, timeout=180)


def test_the_key_is_required_and_never_on_a_command_line(keyed):
    with pytest.raises(AuthenticationError) as e:
        OpenAI(base_url=keyed["url"], api_key="wrong-key", max_retries=0).embeddings.create(
            input="x", model="tiny-embed"
        )
    assert e.value.status_code == 401
    no_key = httpx.post(keyed["url"] + "/embeddings", json={"input": "x", "model": "tiny-embed"})
    assert no_key.status_code == 401, no_key.text
    ok = OpenAI(base_url=keyed["url"], api_key=KEY).embeddings.create(input="x", model="tiny-embed")
    assert ok.data
    fast = httpx.post(
        keyed["url"] + "/embeddings",
        json={"input": "x", "model": "tiny-embed"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert fast.status_code == 200 and fast.headers.get("x-memoria-route") == "fast"  # the key opens the fast path
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        assert KEY not in " ".join(p.info["cmdline"] or []), p.info["cmdline"]
    state = json.loads(run_memoria("status", "--json", env=keyed["env"]).stdout)
    assert state["auth"] is True
    config = os.path.join(keyed["env"]["MEMORIA_HOME"], "litellm.yaml")
    assert KEY not in open(config).read()


def test_each_worker_has_its_own_key_and_never_sees_the_master_key(keyed):
    """A local user who reaches a worker's port directly gets 401; the proxy reaches it with the worker's key,
    on both of its paths; the master key is in no worker's environment."""
    import psutil

    state = json.loads(run_memoria("status", "--json", env=keyed["env"]).stdout)
    worker = state["processes"]["tiny-embed"]
    direct = f"http://127.0.0.1:{worker['port']}/v1/embeddings"
    assert httpx.post(direct, json={"input": "x", "model": "tiny-embed"}).status_code == 401
    assert (
        httpx.post(
            direct, json={"input": "x", "model": "tiny-embed"}, headers={"Authorization": f"Bearer {KEY}"}
        ).status_code
        == 401
    )  # not the master key either
    for route in ("fast", "litellm"):
        r = httpx.post(
            keyed["url"] + "/embeddings",
            json={"input": "x", "model": "tiny-embed"},
            headers={"Authorization": f"Bearer {KEY}", "x-memoria-route": route},
            timeout=60,
        )
        assert r.status_code == 200, (route, r.text)
    tree = [psutil.Process(worker["pid"]), *psutil.Process(worker["pid"]).children(recursive=True)]
    env = tree[0].environ()
    assert "LITELLM_MASTER_KEY" not in env and len(env.get("VLLM_API_KEY", "")) >= 40
    for p in tree:
        assert env["VLLM_API_KEY"] not in " ".join(p.cmdline())


def test_credentials_are_read_one_way_on_both_paths(keyed):
    """Two Authorization headers, or the key padded with a space: refused alike by the fast path and by
    LiteLLM's (they used to disagree: the fast path read the last header, LiteLLM the first)."""
    body = {"input": "x", "model": "tiny-embed"}
    for route in ("fast", "litellm"):
        two = httpx.post(
            keyed["url"] + "/embeddings",
            json=body,
            headers=[("authorization", f"Bearer {KEY}"), ("authorization", "Bearer wrong"), ("x-memoria-route", route)],
        )
        spaced = httpx.post(
            keyed["url"] + "/embeddings",
            json=body,
            headers={"Authorization": f"Bearer  {KEY}", "x-memoria-route": route},
        )
        assert (two.status_code, spaced.status_code) == (401, 401), (route, two.text, spaced.text)


def test_a_body_over_the_limit_is_refused_with_413_before_it_is_read(keyed):
    """proxy.max_body_mb (32 MiB by default) guards both paths; the proxy reads none of the body first."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(keyed["url"])
    for path in ("/v1/embeddings", "/v1/audio/transcriptions"):
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            s.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {200 * 2**20}\r\n\r\n".encode()
                + b"{" * 65536
            )  # a start of the 200 MB: the answer comes without the rest
            answer = b""
            while b"request body over" not in answer:  # the status line and the body may come apart
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
            answer = answer.decode(errors="replace")
        status = answer.split("\r\n", 1)[0]
        assert status == "HTTP/1.1 413 Request Entity Too Large" or status.startswith("HTTP/1.1 413"), answer
        assert "request body over 32 MiB" in answer
    ok = OpenAI(base_url=keyed["url"], api_key=KEY).embeddings.create(input="still fine", model="tiny-embed")
    assert ok.data


def test_metrics_and_the_status_pages_data_need_the_key(keyed):
    """With a master key, /metrics and the status page's data answer 401 without it; the page itself, which
    holds no data, loads and asks for the key. (Before the test that kills the worker: it must be ready.)"""
    root = keyed["url"].removesuffix("/v1")
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/metrics", "/ui/api/status"):
        assert httpx.get(root + path).status_code == 401
        assert httpx.get(root + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(root + "/ui/api/restart/tiny-embed").status_code == 401
    r = httpx.get(root + "/metrics", headers=auth)
    assert r.status_code == 200 and 'vllm:num_requests_running{model="tiny-embed"' in r.text
    status = httpx.get(root + "/ui/api/status", headers=auth).json()
    assert status["state"]["processes"]["tiny-embed"]["state"] == "ready"
    page = httpx.get(root + "/ui")
    assert page.status_code == 200 and 'id="keyInput"' in page.text


def test_upstream_failure_is_an_api_error_with_a_message(keyed):
    state = json.loads(run_memoria("status", "--json", env=keyed["env"]).stdout)
    worker = state["processes"]["tiny-embed"]
    os.killpg(worker["pid"], signal.SIGSTOP)  # hung: the proxy cannot get an answer
    try:
        c = OpenAI(base_url=keyed["url"], api_key=KEY, max_retries=0, timeout=120)
        os.killpg(worker["pid"], signal.SIGKILL)  # and then gone: connection refused upstream
        time.sleep(0.5)
        with pytest.raises(APIError) as e:
            c.embeddings.create(input="x", model="tiny-embed")
        assert e.value.message and len(e.value.message) > 10
        print("upstream failure seen by the SDK:", type(e.value).__name__, e.value.message[:200])
    finally:
        try:
            os.killpg(worker["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
