from __future__ import annotations

import pytest

from memoria_cli.core.errors import InputError
from memoria_cli.core.profile import load_profile, parse_profile, shipped_profiles


def test_every_shipped_profile_loads():
    paths = shipped_profiles()
    assert {p.stem for p in paths} >= {"default", "cpu"}
    for path in paths:
        prof = load_profile(str(path))
        assert prof.models, path
        assert prof.proxy.host == "127.0.0.1" and prof.proxy.port == 8200


def test_default_profile_is_the_seed_stack():
    prof = load_profile("default")
    names = {m.name: m for m in prof.models}
    assert list(names) == ["qwen3-embedding-0.6b", "qwen3-4b-thinking-fp8", "hunyuan-ocr", "whisper-large-v3-turbo"]
    assert names["qwen3-4b-thinking-fp8"].aliases == ["Qwen/Qwen3-4B-Thinking-2507-FP8"]
    assert names["qwen3-4b-thinking-fp8"].reasoning_parser == "qwen3"
    assert names["hunyuan-ocr"].revision and len(names["hunyuan-ocr"].revision) == 40
    assert {m.kind for m in prof.models} == {"embedding", "chat", "vision", "transcription"}
    assert not any(m.trust_remote_code for m in prof.models)


def test_unknown_key_is_named_with_its_path(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(
        "models:\n  - name: a\n    model: x/y\n    kind: chat\n  - name: b\n    model: x/z\n"
        "    kind: chat\n    contxt: 5\n"
    )
    with pytest.raises(InputError) as e:
        load_profile(str(p))
    assert "models[1].contxt: unknown key" in e.value.line()


def test_duplicate_names_and_aliases_refused():
    with pytest.raises(InputError, match="used twice"):
        parse_profile(
            {
                "models": [
                    {"name": "a", "model": "x/y", "kind": "chat", "aliases": ["b"]},
                    {"name": "b", "model": "x/z", "kind": "embedding"},
                ]
            }
        )


def test_bad_kind_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match="models\\[0\\].kind"):
        parse_profile({"models": [{"name": "a", "model": "x/y", "kind": "speech"}]})
    p = tmp_path / "broken.yaml"
    p.write_text("models:\n  - name: a\n   model: [\n")
    with pytest.raises(InputError, match="not valid YAML at line"):
        load_profile(str(p))


def test_relative_model_path_is_anchored_at_the_profile(tmp_path):
    (tmp_path / "m").mkdir()
    p = tmp_path / "p.yaml"
    p.write_text("models:\n  - {name: a, model: ./m, kind: chat}\n")
    assert load_profile(str(p)).models[0].model == str((tmp_path / "m").resolve())


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(InputError) as e:
        load_profile("no-such-profile")
    assert "default" in e.value.line()


def test_memorias_own_process_names_are_reserved():
    from memoria_cli.core.profile import RESERVED_NAMES
    from memoria_cli.core.worker_spec import PROXY

    assert PROXY in RESERVED_NAMES and "supervisor" in RESERVED_NAMES
    for name in RESERVED_NAMES:
        with pytest.raises(InputError, match=f"model name '{name}' is reserved"):
            parse_profile({"models": [{"name": name, "model": "x/y", "kind": "chat"}]})
