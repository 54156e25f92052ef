"""`memoria export kubernetes|helm`: the plan `up` would run, for a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from memoria_cli.cli.options import GPUS, PROFILE

if TYPE_CHECKING:
    from memoria_cli.core.plan import Plan
    from memoria_cli.core.profile import Profile

HEADER = "# written by memoria export"  # a file that starts so is memoria's to replace
OUTPUT = typer.Option(
    None,
    "--output",
    "-o",
    help="kubernetes: a folder for the manifests (one file each); helm: the values file. Default: stdout.",
)

export_app = typer.Typer(
    help="Write the plan for a Kubernetes cluster: plain manifests, or values for vLLM's production-stack chart.\n\n"
    "Example: `memoria export kubernetes --gpus L4 -o k8s/` or `memoria export helm --gpus 2xL4 -o values.yaml`.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")


@export_app.command(name="kubernetes")
def kubernetes_cmd(
    profile: str = PROFILE,
    gpus: str = GPUS,
    output: Path = OUTPUT,
    namespace: str = typer.Option(None, "--namespace", "-n", help="Put every object in this namespace."),
    cache: str = typer.Option(
        "pvc", "--cache", help="Where pods keep the weights: pvc (a claim per worker) or hostpath (a node folder)."
    ),
    host_path: str = typer.Option(
        "/var/lib/memoria/models", "--host-path", help="The node folder for --cache hostpath."
    ),
    router: str = typer.Option(
        None,
        "--router",
        help="Only the proxy, sending every model to this OpenAI-compatible URL: the production-stack chart's "
        "router (http://RELEASE-router-service/v1), to keep the API guide's answers in front of the chart.",
    ),
    storage_class: str = typer.Option(
        None, "--storage-class", help="The claims' storage class (default: the cluster's)."
    ),
) -> None:
    """Deployments and Services per worker with the plan's exact vllm argv, the LiteLLM proxy with its config.

    Example: `memoria export kubernetes --gpus L4 -o k8s/ && kubectl apply -f k8s/`. Make the Secret
    memoria-keys first (the header of the output says how). Workers that share a GPU need HAMi.
    """
    from memoria_cli.core.errors import InputError
    from memoria_cli.export.kubernetes import Cache, KubeOptions, manifests, to_yaml
    from memoria_cli.export.workloads import summary, workloads
    from memoria_cli.run.stack import proxy_plugin_sources

    if cache not in ("pvc", "hostpath"):
        raise InputError(f"--cache {cache!r} is not one of pvc, hostpath", "pick one of them")
    if router is not None and not router.startswith(("http://", "https://")):
        raise InputError(f"--router {router!r} is not a URL", "give it as http://HOST[:PORT]/v1")
    prof, the_plan, spec = _plan(profile, gpus)
    loads = workloads(the_plan, prof)
    opts = KubeOptions(namespace, cast(Cache, cache), host_path, storage_class, router=router)
    objects = manifests(the_plan, prof, loads, opts, proxy_plugin_sources())
    header = _header(prof.name, spec) + summary(loads) + _secret_help(namespace)
    if output is None:
        print(to_yaml(objects, header), end="")
        return
    files = {f"{o['metadata']['name']}.{o['kind'].lower()}.yaml": to_yaml([o], header) for o in objects}
    _write_folder(output, files)


@export_app.command(name="helm")
def helm_cmd(
    profile: str = PROFILE,
    gpus: str = GPUS,
    output: Path = OUTPUT,
    target: str = typer.Option("production-stack", "--target", help="The chart: production-stack (vLLM's)."),
) -> None:
    """A values file for vLLM's production-stack chart: per model its image, context, utilization, flags.

    Example: `memoria export helm --gpus 2xL4 -o values.yaml && helm install memoria vllm/vllm-stack -f values.yaml`.
    """
    import yaml

    from memoria_cli.core.errors import InputError
    from memoria_cli.export.helm import LIMITS, production_stack_values
    from memoria_cli.export.workloads import summary, workloads

    if target != "production-stack":
        raise InputError(f"--target {target!r} is not a chart memoria knows", "use --target production-stack")
    prof, the_plan, spec = _plan(profile, gpus)
    loads = workloads(the_plan, prof)
    values = production_stack_values(prof, loads)
    text = _header(prof.name, spec) + summary(loads) + LIMITS + yaml.safe_dump(values, sort_keys=False)
    if output is None:
        print(text, end="")
        return
    _guard(output)
    from memoria_cli.run.files import write_atomic

    write_atomic(output, text, private=False)
    print(f"wrote {output}")


# --------------------------------------------------------------------------------------------- helpers


def _plan(profile: str, gpus: str | None) -> tuple[Profile, Plan, str]:
    """The plan `up` would run for these GPUs; notes about what a pod cannot reach go to stderr."""
    import sys

    from memoria_cli.core.inventory import inventory_for
    from memoria_cli.core.profile import load_profile
    from memoria_cli.export.workloads import no_gpus
    from memoria_cli.run.stack import make_plan

    prof = load_profile(profile)
    if not inventory_for(gpus).gpus:  # before planning: the CPU engine's limits are not the cluster's
        raise no_gpus()
    prof = prof.always_awake()  # nothing parks and wakes workers in a cluster: _header says so
    _, the_plan = make_plan(prof, gpus)
    for m in prof.models:
        if m.model.startswith("/"):
            print(
                f"memoria: note: {m.name} is served from a local folder ({m.model}); a pod looks for it at that "
                "path: mount it there, or give the model's Hugging Face id in the profile",
                file=sys.stderr,
            )
    return prof, the_plan, gpus or "this machine's GPUs"


def _header(profile: str, gpus: str) -> str:
    from memoria_cli import __version__
    from memoria_cli.core.pins import LITELLM_VERSION, VLLM_VERSION

    return (
        f"{HEADER} {__version__} from profile {profile!r} planned for {gpus} "
        f"(vLLM {VLLM_VERSION}, LiteLLM {LITELLM_VERSION}); edits are lost at the next export\n"
        "# every worker runs all the time, side by side: the profile's idle policies and slots are not exported "
        "(no memoria supervisor parks and wakes workers in a cluster)\n"
    )


def _secret_help(namespace: str | None) -> str:
    ns = f" -n {namespace}" if namespace else ""
    return (
        "# Before applying, make the keys' Secret (each file holds one key, e.g. `openssl rand -hex 32 > master-key`;\n"
        "# hf-token is optional, for gated models):\n"
        f"#   kubectl create secret generic memoria-keys{ns} --from-file=master-key --from-file=worker-key\n"
        "# Whole GPUs: NVIDIA's device plugin (GPU operator). Workers sharing a GPU: HAMi (nvidia.com/gpumem).\n"
    )


def _guard(path: Path) -> None:
    """Refuse to replace a file memoria did not write."""
    from memoria_cli.core.errors import InputError

    if path.is_dir():
        raise InputError(f"{path} is a folder", "give a file name, e.g. -o values.yaml")
    if path.exists() and not _ours(path):
        raise InputError(f"{path} exists and was not written by memoria export", "move it, or pick another -o")


def _ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith(HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def _write_folder(folder: Path, files: dict[str, str]) -> None:
    """The manifests, one file each; a previous export's files that are no longer part of it are removed,
    anything else in the folder is left alone (and never overwritten)."""
    from memoria_cli.core.errors import InputError
    from memoria_cli.run.files import write_atomic

    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file", "give a folder for the manifests, e.g. -o k8s/")
    for name in files:
        _guard(folder / name)
    stale = [p for p in folder.glob("*.yaml") if p.name not in files and _ours(p)] if folder.is_dir() else []
    for name, text in files.items():
        write_atomic(folder / name, text, private=False)
    for p in stale:
        p.unlink()
    print(
        f"wrote {len(files)} manifests to {folder}" + (f" (removed {len(stale)} from the last export)" if stale else "")
    )
