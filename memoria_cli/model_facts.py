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

from memoria_cli.errors import PlanError
from memoria_cli.profile import ModelEntry

DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "float8": 1}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


@dataclass(frozen=True)
class Facts:
    weights: int  # bytes on disk, as the checkpoint stores them
    kv_per_token: int  # bytes of KV cache per token at the checkpoint's dtype
    max_context: int
    dtype_bytes: int  # the checkpoint's float dtype
    quantization: str | None  # e.g. "fp8": weights are not scaled by the served dtype
    source: str  # "config.json at PATH" or "profile facts"

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
    """Pure: KV bytes/token = 2 (K and V) x layers x kv_heads x head_dim x dtype bytes."""
    text = cfg.get("text_config") or cfg.get("llm_config") or cfg
    dtype = str(text.get("torch_dtype") or text.get("dtype") or cfg.get("torch_dtype") or cfg.get("dtype")
                or "bfloat16")
    dbytes = DTYPE_BYTES.get(dtype.replace("torch.", ""), 2)
    quant = (cfg.get("quantization_config") or {}).get("quant_method")
    if "decoder_layers" in text:  # encoder-decoder (Whisper): the decoder's self-attention is what grows
        layers = int(text["decoder_layers"])
        heads = int(text.get("decoder_attention_heads", 1))
        head_dim = int(text["d_model"]) // heads
        kv_heads = heads
        max_ctx = int(text.get("max_target_positions", 448))
    else:
        layers = int(text["num_hidden_layers"])
        heads = int(text.get("num_attention_heads", 1))
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
        max_ctx = int(text.get("max_position_embeddings") or cfg.get("max_position_embeddings") or 2048)
    kv = 2 * layers * kv_heads * head_dim * dbytes
    return Facts(weights=weights, kv_per_token=kv, max_context=max_ctx, dtype_bytes=dbytes,
                 quantization=str(quant).lower() if quant else None, source=source)


def read_facts(entry: ModelEntry) -> Facts:
    folder = local_folder(entry)
    if folder is not None:
        try:
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            weights = sum(f.stat().st_size for f in folder.rglob("*")
                          if f.suffix in WEIGHT_SUFFIXES and f.is_file())
            if entry.facts and weights == 0:
                weights = entry.facts.weights
            return facts_from_config(cfg, weights, f"config.json in {folder}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if entry.facts is None:
                raise PlanError(f"{entry.name}: cannot read the model's config.json in {folder} ({exc})",
                                "check the folder, or add `facts:` to the profile") from None
    if entry.facts is not None:
        f = entry.facts
        kv = 2 * f.layers * f.kv_heads * f.head_dim * f.kv_dtype_bytes
        quant = "fp8" if "fp8" in entry.model.lower() else None
        return Facts(weights=f.weights, kv_per_token=kv, max_context=f.max_context, dtype_bytes=f.kv_dtype_bytes,
                     quantization=quant, source="profile facts")
    if entry.source is not None:
        raise PlanError(f"{entry.name}: not in the model store yet ({entry.model})",
                        "run `memoria pull -p PROFILE` (`memoria up` does it too)")
    raise PlanError(f"{entry.name}: size of {entry.model} unknown (not on disk, no `facts:` in the profile)",
                    "download it first, point `model:` at its folder, or add `facts:` to the profile")
