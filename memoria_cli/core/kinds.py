"""The model kinds memoria serves, one record each: what every layer needs to know about a kind lives here.

To add a kind: add it to `Kind` and `KINDS`, then give it a client command if people call it from the shell
(docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from memoria_cli.core.units import MiB

Kind = Literal["embedding", "chat", "vision", "transcription"]


@dataclass(frozen=True)
class ModelKind:
    name: Kind
    route: str  # the OpenAI route that serves it, under /v1
    litellm_mode: str  # model_info.mode in LiteLLM's config (health checks and routing use it)
    vllm_args: tuple[str, ...]  # flags every worker of this kind gets (model-specific ones live in the profile)
    context: int  # the context a worker wishes for when the profile gives none
    min_context: int  # the floor below which the plan refuses
    max_num_seqs: int
    # no chunked prefill (pooling models, encoder-decoders): one request must fit a step (vLLM's scheduler),
    # and vLLM captures one set of CUDA graphs (piecewise or full decode), not two (vllm/config/vllm.py)
    whole_prompt_steps: bool
    samples: bool  # the sampler warms up over the vocabulary (not a pooling model)
    fallback_activation: int  # the profile-run peak when the model's widths are unknown
    vision: bool = False  # LiteLLM's supports_vision
    shrinks_context: bool = True  # a lower min_context is a fix worth suggesting (not a fixed decoder length)
    fp8_kv: bool = True  # FP8 KV cache is worth suggesting
    # vLLM's default when no flag says (engine/arg_utils.py: `model_config.is_prefix_caching_supported`,
    # config/model.py): on for decoders and last-token pooling, off for encoder-decoders
    prefix_caching: bool = True


KINDS: dict[Kind, ModelKind] = {
    "embedding": ModelKind(
        "embedding",
        "/embeddings",
        "embedding",
        ("--runner", "pooling"),
        8192,
        512,
        64,
        whole_prompt_steps=True,
        samples=False,
        fallback_activation=512 * MiB,
    ),
    "chat": ModelKind(
        "chat",
        "/chat/completions",
        "chat",
        (),
        32768,
        4096,
        32,
        whole_prompt_steps=False,
        samples=True,
        fallback_activation=1024 * MiB,
    ),
    "vision": ModelKind(
        "vision",
        "/chat/completions",
        "chat",
        (),
        16384,
        4096,
        8,
        whole_prompt_steps=False,
        samples=True,
        fallback_activation=2048 * MiB,
        vision=True,
    ),
    "transcription": ModelKind(
        "transcription",
        "/audio/transcriptions",
        "audio_transcription",
        (),
        448,
        448,
        4,
        whole_prompt_steps=True,
        samples=True,
        fallback_activation=1536 * MiB,
        shrinks_context=False,
        fp8_kv=False,
        prefix_caching=False,
    ),
}
