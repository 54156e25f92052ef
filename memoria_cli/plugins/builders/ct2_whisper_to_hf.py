"""Turn a CTranslate2 (faster-whisper) Whisper folder into a Hugging Face Whisper folder vLLM serves.

usage: python ct2_whisper_to_hf.py CT2_DIR OUT_DIR
CT2_DIR holds model.bin (or model.bin.part1, .part2, ... to be joined), config.json and tokenizer.json.
The weights map one to one; only the fused attention projections are split (q|k|v and k|v).
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_model_bin(data: bytes) -> tuple[str, dict[str, np.ndarray]]:
    """Parse CTranslate2's model.bin: (spec name, variables by name), aliases resolved."""
    off = 0

    def num(fmt: str) -> int:
        nonlocal off
        (v,) = struct.unpack_from(fmt, data, off)
        off += struct.calcsize(fmt)
        return v

    def text() -> str:
        nonlocal off
        n = num("<H")
        s = data[off : off + n - 1].decode()
        off += n
        return s

    num("<I")  # binary version
    spec = text()
    num("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(num("<I")):
        name = text()
        shape = [num("<I") for _ in range(num("<B"))]
        dt = DTYPES[num("<B")]
        size = num("<I")
        raw = data[off : off + size]
        off += size
        if isinstance(dt, str):  # bfloat16: widen to float32
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=dt)
        variables[name] = arr.reshape(shape)
    for _ in range(num("<I")):
        alias, target = text(), text()
        variables[alias] = variables[target]
    return spec, variables


def state_dict(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 names -> transformers' WhisperForConditionalGeneration names."""
    sd: dict[str, np.ndarray] = {}

    def put(hf: str, ct: str) -> None:
        sd[hf] = v[ct]

    def norm(hf: str, ct: str) -> None:
        put(hf + ".weight", ct + "/gamma")
        put(hf + ".bias", ct + "/beta")

    for side in ("encoder", "decoder"):
        put(f"model.{side}.embed_positions.weight", f"{side}/position_encodings/encodings")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
    for i in (1, 2):
        put(f"model.encoder.conv{i}.weight", f"encoder/conv{i}/weight")
        put(f"model.encoder.conv{i}.bias", f"encoder/conv{i}/bias")
    put("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")

    def layers(side: str) -> int:
        return len({k.split("/")[1] for k in v if re.match(rf"{side}/layer_\d+/", k)})

    def self_attention(hf: str, ct: str) -> None:
        norm(hf + "self_attn_layer_norm", ct + "/self_attention/layer_norm")
        q, k, val = np.split(v[ct + "/self_attention/linear_0/weight"], 3)
        qb, _, vb = np.split(v[ct + "/self_attention/linear_0/bias"], 3)  # Whisper's k_proj has no bias
        sd.update(
            {
                hf + "self_attn.q_proj.weight": q,
                hf + "self_attn.q_proj.bias": qb,
                hf + "self_attn.k_proj.weight": k,
                hf + "self_attn.v_proj.weight": val,
                hf + "self_attn.v_proj.bias": vb,
            }
        )
        put(hf + "self_attn.out_proj.weight", ct + "/self_attention/linear_1/weight")
        put(hf + "self_attn.out_proj.bias", ct + "/self_attention/linear_1/bias")

    def feed_forward(hf: str, ct: str) -> None:
        norm(hf + "final_layer_norm", ct + "/ffn/layer_norm")
        for j, name in ((0, "fc1"), (1, "fc2")):
            put(f"{hf}{name}.weight", f"{ct}/ffn/linear_{j}/weight")
            put(f"{hf}{name}.bias", f"{ct}/ffn/linear_{j}/bias")

    for i in range(layers("encoder")):
        self_attention(f"model.encoder.layers.{i}.", f"encoder/layer_{i}")
        feed_forward(f"model.encoder.layers.{i}.", f"encoder/layer_{i}")
    for i in range(layers("decoder")):
        hf, ct = f"model.decoder.layers.{i}.", f"decoder/layer_{i}"
        self_attention(hf, ct)
        norm(hf + "encoder_attn_layer_norm", ct + "/attention/layer_norm")
        put(hf + "encoder_attn.q_proj.weight", ct + "/attention/linear_0/weight")
        put(hf + "encoder_attn.q_proj.bias", ct + "/attention/linear_0/bias")
        k, val = np.split(v[ct + "/attention/linear_1/weight"], 2)
        _, vb = np.split(v[ct + "/attention/linear_1/bias"], 2)
        sd.update(
            {
                hf + "encoder_attn.k_proj.weight": k,
                hf + "encoder_attn.v_proj.weight": val,
                hf + "encoder_attn.v_proj.bias": vb,
            }
        )
        put(hf + "encoder_attn.out_proj.weight", ct + "/attention/linear_2/weight")
        put(hf + "encoder_attn.out_proj.bias", ct + "/attention/linear_2/bias")
        feed_forward(hf, ct)
    return sd


def configs(v: dict[str, np.ndarray], ct2cfg: dict, added: dict[str, int]) -> tuple[dict, dict]:
    enc = len({k.split("/")[1] for k in v if re.match(r"encoder/layer_\d+/", k)})
    dec = len({k.split("/")[1] for k in v if re.match(r"decoder/layer_\d+/", k)})
    d_model, mels = v["encoder/conv1/weight"].shape[:2]
    vocab = v["decoder/embeddings/weight"].shape[0]
    heads = int(v["encoder/num_heads"]) if "encoder/num_heads" in v else d_model // 64
    eot, sot, nots = added["<|endoftext|>"], added["<|startoftranscript|>"], added["<|notimestamps|>"]
    multilingual = vocab >= 51865
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "d_model": int(d_model),
        "encoder_layers": enc,
        "decoder_layers": dec,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "num_mel_bins": int(mels),
        "vocab_size": int(vocab),
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
        "num_hidden_layers": enc,
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "begin_suppress_tokens": ct2cfg.get("suppress_ids_begin"),
        "suppress_tokens": ct2cfg.get("suppress_ids"),
        "torch_dtype": "float16",
        "use_cache": True,
    }
    gen = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": config["max_target_positions"],
        "no_timestamps_token_id": nots,
        "prev_sot_token_id": added.get("<|startofprev|>"),
        "begin_suppress_tokens": config["begin_suppress_tokens"],
        "suppress_tokens": config["suppress_tokens"],
        "alignment_heads": ct2cfg.get("alignment_heads"),
        "is_multilingual": multilingual,
        "return_timestamps": False,
    }
    if multilingual:
        ids = set(ct2cfg.get("lang_ids", []))
        gen["lang_to_id"] = {t: i for t, i in added.items() if i in ids}
        gen["task_to_id"] = {"transcribe": added["<|transcribe|>"], "translate": added["<|translate|>"]}
        gen["forced_decoder_ids"] = [[1, None], [2, added["<|transcribe|>"]], [3, nots]]
    else:
        gen["forced_decoder_ids"] = [[1, nots]]
    return config, gen


def model_bytes(src: Path) -> bytes:
    whole = src / "model.bin"
    if whole.is_file():
        return whole.read_bytes()
    parts = sorted(src.glob("model.bin.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    if not parts:
        raise SystemExit(f"no model.bin (or model.bin.partN) in {src}")
    return b"".join(p.read_bytes() for p in parts)


def convert(src: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast

    spec, v = read_model_bin(model_bytes(src))
    if spec != "WhisperSpec":
        raise SystemExit(f"not a Whisper model: {spec}")
    if any(a.dtype == np.int8 and a.ndim >= 2 for a in v.values()):
        raise SystemExit("int8-quantized CTranslate2 models are not supported: use a float16 one")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.float16)
        for k, a in state_dict(v).items()
    }
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    tok = json.loads((src / "tokenizer.json").read_text())
    added = {a["content"]: a["id"] for a in tok["added_tokens"]}
    config, gen = configs(v, json.loads((src / "config.json").read_text()), added)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    (out / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    tk = WhisperTokenizerFast(
        tokenizer_file=str(out / "tokenizer.json"),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tk.model_max_length = 1024
    tk.save_pretrained(str(out))
    WhisperFeatureExtractor(feature_size=config["num_mel_bins"]).save_pretrained(str(out))
    print(
        f"Whisper: {config['encoder_layers']}+{config['decoder_layers']} layers, d_model {config['d_model']}, "
        f"vocab {config['vocab_size']}, {len(tensors)} tensors"
    )


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
