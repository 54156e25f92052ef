"""The LiteLLM config: rendered from the plan, and accepted by LiteLLM's own validator."""

from __future__ import annotations

import pytest
import yaml

from memoria_cli.core.errors import PreflightError
from memoria_cli.core.inventory import describe
from memoria_cli.core.model_facts import read_facts
from memoria_cli.core.planner import plan
from memoria_cli.core.profile import load_profile
from memoria_cli.core.proxy_config import auth_env, render
from memoria_cli.run.stack import write_proxy_files
from tests.helpers import litellm_validate

DEFAULT = load_profile("default")


def default_config(auth: bool) -> dict:
    p = plan(DEFAULT, describe("L4"), {m.name: read_facts(m) for m in DEFAULT.models})
    return render(p, DEFAULT, auth)


def test_one_deployment_per_worker_and_every_alias():
    cfg = default_config(auth=False)
    names = [m["model_name"] for m in cfg["model_list"]]
    assert names == [m.name for m in DEFAULT.models]
    modes = {m["model_name"]: m["model_info"]["mode"] for m in cfg["model_list"]}
    assert modes == {
        "qwen3-embedding-0.6b": "embedding",
        "qwen3-4b-thinking-fp8": "chat",
        "hunyuan-ocr": "chat",
        "whisper-large-v3-turbo": "audio_transcription",
    }
    aliases = cfg["router_settings"]["model_group_alias"]
    assert aliases["Qwen/Qwen3-4B-Thinking-2507-FP8"] == "qwen3-4b-thinking-fp8"
    assert aliases["tencent/HunyuanOCR"] == "hunyuan-ocr"
    for m in cfg["model_list"]:
        assert m["litellm_params"]["model"] == f"hosted_vllm/{m['model_name']}"
        assert m["litellm_params"]["api_base"].startswith("http://127.0.0.1:83")
    assert "master_key" not in cfg["general_settings"]
    keyed = default_config(auth=True)["general_settings"]
    assert keyed["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert keyed["custom_auth"] == "memoria_hooks.user_api_key_auth"


def test_auth_from_environment_and_loopback_rule():
    assert auth_env("127.0.0.1", {}) == (False, {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"})
    on, env = auth_env("0.0.0.0", {"LITELLM_MASTER_KEY": "sk-secret-123"})
    assert on and env == {"LITELLM_MASTER_KEY": "sk-secret-123"}
    with pytest.raises(PreflightError, match="no authentication"):
        auth_env("0.0.0.0", {})


@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.medium
def test_litellm_accepts_the_config(tmp_path, auth):
    path = tmp_path / "litellm.yaml"
    write_proxy_files(path, default_config(auth))
    assert yaml.safe_load(path.read_text())["model_list"]
    proc = litellm_validate(path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # LiteLLM's own verdict, with every deployment and alias of the profile (4 models, 4 Hugging Face ids)
    assert "LiteLLM: config OK (8 models)" in out, out[-3000:]
