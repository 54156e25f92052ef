"""Turn a GGUF file (llama.cpp's format) into a Hugging Face folder vLLM serves: dequantized weights,
tokenizer and chat template from the GGUF's own metadata.

usage: python gguf_to_hf.py FILE.gguf OUT_DIR [--dtype bfloat16|float32]
"""

from __future__ import annotations

import sys
from pathlib import Path


def convert(gguf: Path, out: Path, dtype: str = "bfloat16") -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # Loaded from GGUF, the weights are already dequantized; drop the GGUF provenance so the folder is plain HF.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model = model.to(getattr(torch, dtype))
    model.config.dtype = dtype
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    if tok.chat_template is None:
        raise SystemExit("the GGUF carries no chat template: chat would not work")
    print(f"{type(model).__name__}: {model.num_parameters()} parameters, {dtype}, chat template kept")


if __name__ == "__main__":
    args = sys.argv[1:]
    dtype = args[args.index("--dtype") + 1] if "--dtype" in args else "bfloat16"
    convert(Path(args[0]), Path(args[1]), dtype)
