"""What one vLLM 0.32 GPU worker takes, figure by figure, as vLLM's own start-up code accounts for it. Pure.

The contract memoria keeps with vLLM (vllm/v1/worker/gpu_worker.py, `init_device` and
`determine_available_memory`):
- The worker creates its CUDA context, then snapshots free memory and requires free >= ceil(util x total)
  (vllm/v1/worker/utils.py `request_memory`). The context is therefore outside the utilization figure.
- With no `--kv-cache-memory-bytes`, the profile run measures weights, the activation peak and non-torch
  memory, then CUDA graphs (`profile_cudagraph_memory`, on by default since v0.21), and the KV cache gets
  exactly util x total minus all of those. So a worker never holds more than its CUDA context plus
  util x total: memoria gives each worker a utilization budget and lets vLLM measure inside it.
- The context length must be fixed before the start: vLLM's admission check (vllm/v1/core/kv_cache_utils.py,
  `get_kv_cache_configs`) holds back one block, the block pool's null block, then requires one full
  `max_model_len` request (self-attention blocks plus, for Whisper, cross-attention blocks) to fit.
The estimates below decide how the budget is split; they err high (then vLLM finds more KV than planned),
and each constant says where it comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memoria_cli.core.kinds import KINDS, Kind
from memoria_cli.core.units import GiB, MiB

if TYPE_CHECKING:
    from memoria_cli.core.model_facts import Facts

BLOCK_SIZE = 16  # tokens per KV block; memoria pins --block-size 16 (vLLM's CUDA default, vllm/config/cache.py)
CPU_BATCHED_TOKENS = 2048  # vLLM's CPU default for the API server (engine/arg_utils.py `get_batch_defaults`)
CPU_BLOCK_SIZE = 128  # the CPU engine's default block size (vllm/platforms/cpu.py `check_and_update_config`)

# The worker's CUDA context and torch/NCCL set-up, created before the free-memory snapshot
# (gpu_worker.py `init_device`): about 0.5 GiB per process on Ampere to Hopper with lazy module loading.
CUDA_CONTEXT = 512 * MiB

# Memory that is neither torch's nor the KV cache's, grown during the profile run (cuBLAS/cuBLASLt
# workspaces, attention-backend buffers): published 0.13 GiB for Qwen3-0.6B on an H100 (vLLM 0.11 start-up
# log); twice that here. Tensor parallelism adds NCCL buffers: 1.79 -> 3.58 GiB going from TP1 to TP2 for
# Llama-3-8B (vLLM pull request 10511's log), so ~1.8 GiB per extra rank.
NON_TORCH = 256 * MiB
NON_TORCH_PER_TP_RANK = 1800 * MiB
# A pipeline stage's NCCL connection to each neighbouring stage: NCCL's documented defaults, NCCL_BUFFSIZE 4 MiB
# per channel and direction, up to 32 channels (NCCL_MAX_NCHANNELS): 256 MiB at most. No published vLLM log
# separates it; the ceiling is counted.
PP_PEER_BUFFERS = 4 * MiB * 32 * 2

# The sampler warm-up (gpu_model_runner.py `_dummy_sampler_run`) builds logits for max_num_seqs dummy
# requests over the whole vocabulary and samples them with top-k and top-p. Bytes per logit at its peak:
# calibrated on the published Qwen3-0.6B H100 run (max_num_seqs 1024, vocab 151,936, activation peak
# 5.56 GiB; a sort-based top-p: bf16 logits, fp32 copy, sorted values and int64 indices, the sort's own
# buffers, masks). vLLM 0.32 on CUDA samples with FlashInfer/Triton kernels that skip the full sort, so this
# over-reserves there; vLLM then gives the difference to the KV cache.
SAMPLER_BYTES_PER_LOGIT = 37

# CUDA graphs (gpu_model_runner.py `profile_cudagraph_memory`): the largest graph's activations, plus at
# least 1 MiB per further graph ("Use at least 1 MiB per graph for driver overhead").
GRAPH_OVERHEAD = 1 * MiB
GRAPH_CEILING = 512  # default max capture size (vllm/config/vllm.py `_set_cudagraph_sizes`)

# When a checkpoint's widths are unknown (a `facts:` block without them): the old per-kind guesses.


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class KvLayout:
    """How vLLM lays out one worker's KV cache (per GPU): pages of BLOCK_SIZE tokens per layer.

    Whisper's self-attention and cross-attention layers form two groups of equal page size that alias the
    same pool (kv_cache_utils.py `get_kv_cache_config_from_groups`), so one pool block spans one group's
    layers, and a request takes blocks for its tokens plus blocks for the encoder positions."""

    page: int  # bytes of one block in one layer
    layers: int  # layers per group
    cross_tokens: int = 0
    block: int = BLOCK_SIZE  # tokens per block

    @property
    def bytes_per_block(self) -> int:
        return self.page * self.layers

    def blocks_per_request(self, context: int) -> int:
        return cdiv(context, self.block) + cdiv(self.cross_tokens, self.block)

    def kv_bytes_for(self, context: int, seqs: int = 1) -> int:
        """The smallest cache that vLLM admits for `seqs` full requests: their blocks plus the null block."""
        return (seqs * self.blocks_per_request(context) + 1) * self.bytes_per_block

    def max_context(self, kv_bytes: int) -> int:
        """The longest context (a whole number of blocks) vLLM admits with `kv_bytes`; 0 if none."""
        usable = kv_bytes // self.bytes_per_block - 1 - cdiv(self.cross_tokens, self.block)
        return max(0, usable) * self.block

    def kv_tokens(self, kv_bytes: int, context: int) -> int:
        """What vLLM logs as "KV cache size: N tokens" (`get_kv_cache_capacity`)."""
        return int(kv_bytes // self.bytes_per_block / self.blocks_per_request(context) * context)

    def concurrency(self, kv_bytes: int, context: int) -> float:
        """vLLM's "Maximum concurrency for N tokens per request"."""
        return kv_bytes // self.bytes_per_block / self.blocks_per_request(context)


def kv_layout(
    facts: Facts, kv_bytes_per_elem: int, tp: int, max_num_batched_tokens: int, block: int = BLOCK_SIZE
) -> KvLayout:
    """Per GPU (or the CPU engine, with its `block`): KV heads split across tensor-parallel ranks (replicated
    when there are fewer heads than ranks, vllm/config/model.py `get_num_kv_heads`). A cross-attention layer
    caches max_num_encoder_input_tokens per request (kv_cache_interface.py `CrossAttentionSpec`), which vLLM
    sets to max_num_batched_tokens (config/scheduler.py `__post_init__`): 1,792 for Whisper at 4 sequences,
    not its 1,500 positions."""
    heads = max(1, facts.kv_heads // tp)
    page = block * heads * facts.head_dim * 2 * kv_bytes_per_elem  # K and V (kv_cache_interface.py)
    cross = max_num_batched_tokens if facts.cross_tokens else 0
    return KvLayout(page=page, layers=facts.layers, cross_tokens=cross, block=block)


def pp_layers(layers: int, rank: int, size: int) -> tuple[int, int]:
    """[start, end) of the layers pipeline stage `rank` of `size` holds: vLLM's default split
    (vllm/distributed/utils.py `get_pp_indices`): even shares, the remainder going to the stages before the
    last, from the second-to-last backwards."""
    parts = [layers // size] * size
    for i in range(2, layers % size + 2):
        parts[-i] += 1
    start = sum(parts[:rank])
    return start, start + parts[rank]


def stage_weights(facts: Facts, weights: int, dtype_bytes: int, rank: int, size: int) -> int:
    """The weights stage `rank` of `size` loads: its share of the decoder layers, plus the vocabulary matrix
    on the first stage (embeddings) and on the last (the LM head; with tied embeddings vLLM's last stage
    holds its own copy: a stage cannot share a tensor with another process). Unknown widths: one layer's
    worth stands for the matrix (errs high)."""
    if size == 1:
        return weights
    start, end = pp_layers(facts.layers, rank, size)
    matrix = facts.vocab * facts.hidden * dtype_bytes if facts.vocab and facts.hidden else weights // facts.layers
    body = max(0, weights - matrix)
    ends = (rank == 0) + (rank == size - 1)
    return math.ceil(body * (end - start) / facts.layers) + ends * matrix


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """vLLM's default CUDA-graph batch sizes: [1, 2, 4] + 8..248 by 8 + 256.. by 16, up to
    min(2 x max_num_seqs, 512), never above max_num_batched_tokens (vllm/config/vllm.py)."""
    top = min(2 * max_num_seqs, GRAPH_CEILING, max_num_batched_tokens)
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, GRAPH_CEILING + 1, 16)]
    return [s for s in sizes if s <= top]


def forward_peak(facts: Facts, tokens: int, act_bytes: int, tp: int) -> int:
    """The dummy forward pass over `tokens` (gpu_model_runner.py `_dummy_run`): the widest layer's live
    tensors (a gated MLP holds gate+up and the activated half; attention holds q, k, v and its output) plus
    the residual stream."""
    q = facts.heads * facts.head_dim
    kv = facts.kv_heads * facts.head_dim
    widest = max(3 * facts.intermediate, 2 * q + 2 * kv) // tp
    return tokens * (widest + 2 * facts.hidden) * act_bytes


def encoder_peak(facts: Facts, budget_tokens: int, act_bytes: int, tp: int) -> int:
    """The multimodal / audio encoder run with as many maximal items as the encoder budget holds
    (gpu_model_runner.py `profile_run`; the budget is max_num_batched_tokens, vllm/config/scheduler.py)."""
    if not facts.encoder_tokens or not facts.encoder_hidden:
        return 0
    items = max(1, budget_tokens // facts.encoder_tokens)
    tokens = items * facts.encoder_tokens
    return tokens * (2 * facts.encoder_ffn // tp + 4 * facts.encoder_hidden) * act_bytes


@dataclass(frozen=True)
class WorkerMemory:
    """One GPU worker's figures, per GPU, in bytes."""

    weights: int
    activation: int
    graphs: int
    non_torch: int
    context: int = CUDA_CONTEXT  # outside --gpu-memory-utilization

    @property
    def inside(self) -> int:
        """What vLLM takes out of util x total before the KV cache."""
        return self.weights + self.activation + self.graphs + self.non_torch


def worker_memory(
    facts: Facts,
    kind: Kind,
    weights: int,
    act_bytes: int,
    tp: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    eager: bool,
    activation: int | None = None,
    pp: int = 1,
) -> WorkerMemory:
    """Weights (split across ranks), activation peak, CUDA graphs and non-torch memory, per GPU."""
    if activation is None:
        if not facts.hidden or (KINDS[kind].samples and not facts.vocab):
            activation = KINDS[kind].fallback_activation
        else:
            fwd = forward_peak(facts, max_num_batched_tokens, act_bytes, tp)
            kept = max_num_batched_tokens * facts.hidden * act_bytes  # hidden states kept for the head
            if not KINDS[kind].samples:  # the pooler: the hidden states again, as float32
                head = max_num_batched_tokens * facts.hidden * 4
            else:
                head = max_num_seqs * facts.vocab * SAMPLER_BYTES_PER_LOGIT
            enc = encoder_peak(facts, max_num_batched_tokens, act_bytes, tp)
            activation = max(fwd, kept + head) + enc
    graphs = 0
    if not eager and facts.hidden:
        sizes = capture_sizes(max_num_seqs, max_num_batched_tokens)
        # Pooling models capture piecewise graphs only, encoder-decoders full decode graphs only, the rest
        # both (FULL_AND_PIECEWISE; vllm/config/vllm.py); the two kinds share one pool, so the largest counts once.
        count = len(sizes) * (1 if KINDS[kind].whole_prompt_steps else 2)
        graphs = forward_peak(facts, sizes[-1], act_bytes, tp) + max(0, count - 1) * GRAPH_OVERHEAD
    elif not eager:
        graphs = 512 * MiB  # widths unknown: the old flat guess
    non_torch = NON_TORCH + (NON_TORCH_PER_TP_RANK * (tp - 1) // tp if tp > 1 else 0)
    if pp > 1:  # NCCL's send/recv channels to the neighbouring stages (one, or two for a middle stage)
        non_torch += PP_PEER_BUFFERS * min(2, pp - 1)
    return WorkerMemory(weights=math.ceil(weights / tp), activation=activation, graphs=graphs, non_torch=non_torch)


def batched_tokens(kind: Kind, context: int, max_num_seqs: int, card_total: int, card_name: str) -> int:
    """vLLM 0.32's own default for max_num_batched_tokens, pinned so the activation follows the plan and not
    the card (engine/arg_utils.py `get_batch_defaults`: 2048 for the API server, 8192 on >= 70 GiB cards other
    than A100s, 16384 on >= 160 GiB). Without chunked prefill (encoder-decoders, pooling models) one request
    must fit a step: at least the context, and no more than max_num_seqs x context."""
    big = card_total >= 70 * GiB and "a100" not in card_name.lower()
    default = 16384 if card_total >= 160 * GiB else 8192 if big else 2048
    if KINDS[kind].whole_prompt_steps:
        return min(max(context, default), max_num_seqs * context)
    return default
