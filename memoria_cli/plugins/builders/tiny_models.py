"""Build tiny models on the spot, with no download: for the tests, the `tiny` profile and the demo's vision worker.

usage: python tiny_models.py OUT_ROOT                    all four, as OUT_ROOT/tiny-{chat,embed,whisper,vl}
       python tiny_models.py --one tiny-vl OUT_DIR       one of them, into OUT_DIR
(run with the vLLM runtime's python: it has torch/transformers)

  tiny-chat     Qwen3 architecture, weights set by hand so that it always answers
                "<think> hmm</think> Hello world": tests can assert exact reasoning and content.
  tiny-embed    Qwen3 architecture, random weights, served with vLLM's pooling runner.
  tiny-whisper  Whisper architecture, random weights, processor built in code.
  tiny-vl       Qwen2.5-VL architecture, random weights: the vision plumbing, not OCR quality.
Each folder gets a BUILT stamp last, so an interrupted build is redone and a finished one is kept.
"""

from __future__ import annotations

import glob
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set content = message['content'] %}"
    "{%- else %}{%- set content = message['content'] | map(attribute='text') | select('defined') | join('') %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def corpus(extra: str) -> list[str]:
    texts = [
        open(p, errors="ignore").read()
        for p in sorted(glob.glob("/usr/share/common-licenses/*"))[:12]
        if os.path.isfile(p)
    ]
    return texts + [extra] * 50


def bpe(vocab: int, specials: list[str], extra: str) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(extra), trainer)
    return tok


VERSION = "2"  # bump when a builder changes, so cached models are rebuilt


def done(path: str) -> bool:
    try:
        with open(os.path.join(path, "BUILT")) as f:
            return f.read().strip() == VERSION
    except OSError:
        return False


def stamp(path: str) -> None:
    with open(os.path.join(path, "BUILT"), "w") as f:
        f.write(VERSION + "\n")


def chat_tokenizer():
    from transformers import PreTrainedTokenizerFast

    tok = bpe(
        1024,
        SPECIALS,
        'Hello world. hmm let me think. Solar panels convert sunlight to electricity. {"answer": "yes", "ok": true}',
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=SPECIALS[1:]
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.model_max_length = 1024
    return hf


def qwen3(out: str, tok, scripted: bool) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        torch_dtype="float32",
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg)
    if scripted:
        # Zero every residual branch, so the last hidden state is the current token's embedding; then make
        # each token of the script a one-hot class whose head row points at the next token of the script.
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            ids = tok.convert_tokens_to_ids
            chain = (
                [ids("<think>")]
                + tok.encode(" hmm", add_special_tokens=False)
                + [ids("</think>")]
                + tok.encode(" Hello", add_special_tokens=False)
                + tok.encode(" world", add_special_tokens=False)
                + [ids("<|im_end|>")]
            )
            assert len(set(chain)) == len(chain), chain
            emb = torch.zeros(cfg.vocab_size, cfg.hidden_size)
            emb[:, 0] = 1.0
            for k, t in enumerate(chain[:-1]):
                emb[t] = 0.0
                emb[t, k + 1] = 1.0
            head = torch.zeros(cfg.vocab_size, cfg.hidden_size)
            # Where a grammar (structured output) forbids the script, prefer closing JSON: '"' then '}' then
            # ']', so constrained answers end instead of filling a string forever.
            for tok_text, bias in (('"', 1.0), ("}", 0.9), ("]", 0.8)):
                head[tok.convert_tokens_to_ids(tok_text)] = bias
            head[chain[0], 0] = 50.0
            for k in range(len(chain) - 1):
                head[chain[k + 1], k + 1] = 50.0
            model.model.embed_tokens.weight.copy_(emb)
            model.lm_head.weight.copy_(head)
            model.model.norm.weight.fill_(1.0)
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def whisper(out: str) -> None:
    from transformers import (
        PreTrainedTokenizerFast,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    langs = [
        "en",
        "zh",
        "de",
        "es",
        "ru",
        "ko",
        "fr",
        "ja",
        "pt",
        "tr",
        "pl",
        "ca",
        "nl",
        "ar",
        "sv",
        "it",
        "id",
        "hi",
        "fi",
        "vi",
        "he",
        "uk",
        "el",
        "ms",
        "cs",
        "ro",
        "da",
        "hu",
        "ta",
        "no",
        "th",
        "ur",
        "hr",
        "bg",
        "lt",
        "la",
        "mi",
        "ml",
        "cy",
        "sk",
        "te",
        "fa",
        "lv",
        "bn",
        "sr",
        "az",
        "sl",
        "kn",
        "et",
        "mk",
        "br",
        "eu",
        "is",
        "hy",
        "ne",
        "mn",
        "bs",
        "kk",
        "sq",
        "sw",
        "gl",
        "mr",
        "pa",
        "si",
        "km",
        "sn",
        "yo",
        "so",
        "af",
        "oc",
        "ka",
        "be",
        "tg",
        "sd",
        "gu",
        "am",
        "yi",
        "lo",
        "uz",
        "fo",
        "ht",
        "ps",
        "tk",
        "nn",
        "mt",
        "sa",
        "lb",
        "my",
        "bo",
        "tl",
        "mg",
        "as",
        "tt",
        "haw",
        "ln",
        "ha",
        "ba",
        "jw",
        "su",
        "yue",
    ]
    try:  # cover whatever vLLM validates language codes against
        from vllm.model_executor.models.whisper import ISO639_1_SUPPORTED_LANGS

        langs += [lang for lang in ISO639_1_SUPPORTED_LANGS if lang not in langs]
    except Exception:
        pass
    specials = (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{lang}|>" for lang in langs]
        + [
            "<|translate|>",
            "<|transcribe|>",
            "<|startoflm|>",
            "<|startofprev|>",
            "<|prev|>",
            "<|nospeech|>",
            "<|notimestamps|>",
        ]
    )
    tok = bpe(1000, specials, "hello world this is a test of speech recognition")
    tmp = out + "_tok"
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    ).save_pretrained(tmp)
    wtok = WhisperTokenizer.from_pretrained(tmp)
    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
    ids = wtok.convert_tokens_to_ids
    cfg = WhisperConfig(
        vocab_size=len(wtok),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=ids("<|endoftext|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"),
        decoder_start_token_id=ids("<|startoftranscript|>"),
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    gc = model.generation_config
    gc.decoder_start_token_id = cfg.decoder_start_token_id
    gc.eos_token_id = gc.pad_token_id = cfg.eos_token_id
    gc.no_timestamps_token_id = ids("<|notimestamps|>")
    gc.lang_to_id = {f"<|{lang}|>": ids(f"<|{lang}|>") for lang in langs}
    gc.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    gc.is_multilingual = True
    gc.max_length = 448
    model.save_pretrained(out, safe_serialization=True)
    WhisperProcessor(feature_extractor=fe, tokenizer=wtok).save_pretrained(out)


def qwen25vl(out: str) -> None:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    tok = chat_tokenizer()
    tok.add_tokens(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"], special_tokens=True)
    ids = tok.convert_tokens_to_ids
    tok.chat_template = (
        "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' }}"
        "{%- if message['content'] is string %}{{- message['content'] }}{%- else %}"
        "{%- for part in message['content'] %}"
        "{%- if part['type'] in ['image', 'image_url'] %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
        "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}{%- endfor %}{%- endif %}"
        "{{- '<|im_end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=8192,  # room for the API guide's OCR examples (max_tokens=4096)
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            tie_word_embeddings=False,
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            out_hidden_size=128,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
            in_channels=3,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    ip = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    vp = None
    try:
        from transformers import Qwen2VLVideoProcessor

        vp = Qwen2VLVideoProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    except Exception:
        pass
    model.save_pretrained(out, safe_serialization=True)
    Qwen2_5_VLProcessor(
        image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=tok.chat_template
    ).save_pretrained(out)


BUILDERS = {
    "tiny-chat": lambda out: qwen3(out, chat_tokenizer(), scripted=True),
    "tiny-embed": lambda out: qwen3(out, chat_tokenizer(), scripted=False),
    "tiny-whisper": whisper,
    "tiny-vl": qwen25vl,
}


def main(root: str) -> None:
    os.makedirs(root, exist_ok=True)
    for name, build in BUILDERS.items():
        path = os.path.join(root, name)
        if not done(path):
            build(path)
            stamp(path)
    print("tiny models ready in", root)


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        BUILDERS[sys.argv[2]](sys.argv[3])
        print(sys.argv[2], "(random weights) built in", sys.argv[3])
    else:
        main(sys.argv[1])
