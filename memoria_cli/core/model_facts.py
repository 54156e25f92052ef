"""How big a model is: weights and KV bytes per token, read from its local files or from the profile.

Sources, best first: a local folder (the `model` path, or the Hugging Face cache), then `facts:` in the
profile (model-card figures for models not downloaded yet). Reading is file I/O; the arithmetic is pure.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memoria_cli.core.errors import PlanError
from memoria_cli.core.profile import ModelEntry

DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "float8": 1}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


@dataclass(frozen=True)
class Facts:
    """A model's shape as vLLM's memory code sees it: the attention layers that hold KV cache (their KV heads
    and head size make the per-layer KV spec), and the widths that size the profile run's activations."""

    weights: int  # bytes on disk, as the checkpoint stores them (FP8 linears at 1 byte, their scales, bf16 rest)
    layers: int  # attention layers with a KV cache (Whisper: decoder layers)
    kv_heads: int
    head_dim: int
    max_context: int
    dtype_bytes: int  # the checkpoint's float dtype
    quantization: str | None  # e.g. "fp8": weights are not scaled by the served dtype
    source: str  # "config.json at PATH" or "profile facts"
    hidden: int = 0  # 0: unknown (activation then falls back to the kind's default)
    intermediate: int = 0
    heads: int = 0
    vocab: int = 0
    cross_tokens: int = 0  # encoder positions each request's cross-attention caches (Whisper: 1500)
    encoder_hidden: int = 0  # the audio / vision encoder that vLLM profiles with its largest input
    encoder_ffn: int = 0
    encoder_tokens: int = 0  # encoder tokens of one maximal input item (30 s of audio, the largest image)

    @property
    def kv_per_token(self) -> int:
        """KV bytes per token at the checkpoint's dtype: 2 (K and V) x layers x kv_heads x head_dim x bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def served(self, dtype: str | None) -> tuple[int, int]:
        """(weights, kv_per_token) when served as `dtype` (None/auto keeps the checkpoint's)."""
        want = DTYPE_BYTES.get((dtype or "auto").lower())
        if not want or want == self.dtype_bytes:
            return self.weights, self.kv_per_token
        kv = self.kv_per_token * want // self.dtype_bytes
        if self.quantization:
            return self.weights, kv
        return self.weights * want // self.dtype_bytes, kv


def hf_cache_dirs() -> list[Path]:
    hub = os.environ.get("HF_HUB_CACHE")
    if hub:
        return [Path(hub)]
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return [home / "hub"]


def local_folder(entry: ModelEntry) -> Path | None:
    """The model's folder on disk, if it is a path or already in the Hugging Face cache."""
    p = Path(entry.model).expanduser()
    if p.is_dir():
        return p
    if entry.model.count("/") != 1 or p.is_absolute():
        return None
    for hub in hf_cache_dirs():
        repo = hub / ("models--" + entry.model.replace("/", "--"))
        rev = entry.revision
        if not rev and (repo / "refs" / "main").is_file():
            rev = (repo / "refs" / "main").read_text().strip()
        if rev and (repo / "snapshots" / rev / "config.json").is_file():
            return repo / "snapshots" / rev
    return None


def facts_from_config(cfg: dict[str, Any], weights: int, source: str) -> Facts:
    """Pure: the shape from a Hugging Face config.json (a multimodal model's text part, Whisper's decoder)."""
    text = cfg.get("text_config") or cfg.get("llm_config") or cfg
    dtype = str(
        text.get("torch_dtype") or text.get("dtype") or cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    )
    dbytes = DTYPE_BYTES.get(dtype.replace("torch.", ""), 2)
    quant = (cfg.get("quantization_config") or {}).get("quant_method")
    if "decoder_layers" in text:  # encoder-decoder (Whisper): decoder self-attention + cross-attention caches
        layers = int(text["decoder_layers"])
        heads = int(text.get("decoder_attention_heads", 1))
        hidden = int(text["d_model"])
        return Facts(
            weights=weights,
            layers=layers,
            kv_heads=heads,
            head_dim=hidden // heads,
            max_context=int(text.get("max_target_positions", 448)),
            dtype_bytes=dbytes,
            quantization=str(quant).lower() if quant else None,
            source=source,
            hidden=hidden,
            intermediate=int(text.get("decoder_ffn_dim", 4 * hidden)),
            heads=heads,
            vocab=int(text.get("vocab_size", 0)),
            cross_tokens=int(text.get("max_source_positions", 1500)),
            encoder_hidden=hidden,
            encoder_ffn=int(text.get("encoder_ffn_dim", 4 * hidden)),
            encoder_tokens=int(text.get("max_source_positions", 1500)),
        )
    layers = int(text["num_hidden_layers"])
    heads = int(text.get("num_attention_heads", 1))
    hidden = int(text.get("hidden_size", 0))
    vision = cfg.get("vision_config") or {}
    return Facts(
        weights=weights,
        layers=layers,
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        max_context=int(text.get("max_position_embeddings") or cfg.get("max_position_embeddings") or 2048),
        dtype_bytes=dbytes,
        quantization=str(quant).lower() if quant else None,
        source=source,
        hidden=hidden,
        intermediate=int(text.get("intermediate_size", 0)),
        heads=heads,
        vocab=int(text.get("vocab_size") or cfg.get("vocab_size") or 0),
        encoder_hidden=int(vision.get("hidden_size", 0)),
        encoder_ffn=int(vision.get("intermediate_size", 0)),
    )


def read_facts(entry: ModelEntry) -> Facts:
    folder = local_folder(entry)
    if folder is not None:
        try:
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            weights = sum(f.stat().st_size for f in folder.rglob("*") if f.suffix in WEIGHT_SUFFIXES and f.is_file())
            if entry.facts and weights == 0:
                weights = entry.facts.weights
            return facts_from_config(cfg, weights, f"config.json in {folder}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if entry.facts is None:
                raise PlanError(
                    f"{entry.name}: cannot read the model's config.json in {folder} ({exc})",
                    "check the folder, or add `facts:` to the profile",
                ) from None
    if entry.facts is not None:
        f = entry.facts
        quant = "fp8" if "fp8" in entry.model.lower() else None
        return Facts(
            weights=f.weights,
            layers=f.layers,
            kv_heads=f.kv_heads,
            head_dim=f.head_dim,
            max_context=f.max_context,
            dtype_bytes=f.kv_dtype_bytes,
            quantization=quant,
            source="profile facts",
            hidden=f.hidden,
            intermediate=f.intermediate,
            heads=f.heads,
            vocab=f.vocab,
            cross_tokens=f.cross_tokens,
            encoder_hidden=f.encoder_hidden,
            encoder_ffn=f.encoder_ffn,
            encoder_tokens=f.encoder_tokens,
        )
    if entry.source is not None:
        raise PlanError(
            f"{entry.name}: not in the model store yet ({entry.model})",
            "run `memoria pull -p PROFILE` (`memoria up` does it too)",
        )
    raise PlanError(
        f"{entry.name}: size of {entry.model} unknown (not on disk, no `facts:` in the profile)",
        "download it first, point `model:` at its folder, or add `facts:` to the profile",
    )
