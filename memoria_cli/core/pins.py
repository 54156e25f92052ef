"""The versions memoria runs, in one place: `memoria setup` installs them and `memoria export` names their
images (vLLM's and LiteLLM's images carry the same version tags as their packages)."""

from __future__ import annotations

VLLM_VERSION = "0.32.0"
LITELLM_VERSION = "1.108.7"  # never 1.82.7, 1.82.8 or 1.107.x (run/runtimes.FORBIDDEN_LITELLM)
LITELLM_PIN = f"litellm[proxy]=={LITELLM_VERSION}"
VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"  # the CUDA build of the same release
LITELLM_IMAGE = f"ghcr.io/berriai/litellm:v{LITELLM_VERSION}"
