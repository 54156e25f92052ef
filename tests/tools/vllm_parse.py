"""Parse `vllm serve` command lines with the installed vLLM's own parser (run with the vLLM runtime's python).

stdin: JSON list of argv lists (each starting with the vllm executable and "serve").
stdout: JSON list, per argv either {"ok": true, "args": {...}} or {"ok": false, "error": "..."}.
"""

import contextlib
import io
import json
import sys

from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser

KEEP = (
    "model_tag",
    "served_model_name",
    "host",
    "port",
    "max_model_len",
    "max_num_seqs",
    "kv_cache_memory_bytes",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "dtype",
    "revision",
    "enforce_eager",
    "runner",
    "reasoning_parser",
    "trust_remote_code",
    "enable_prefix_caching",
    "mm_processor_cache_gb",
    "structured_outputs_config",
    "shutdown_timeout",
    "max_num_batched_tokens",
    "block_size",
    "kv_cache_dtype",
    "pipeline_parallel_size",
    "nnodes",
    "node_rank",
    "master_addr",
    "master_port",
    "headless",
    "distributed_executor_backend",
)

out = []
for argv in json.load(sys.stdin):
    assert argv[1] == "serve", argv
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = make_arg_parser(FlexibleArgumentParser(prog="vllm serve")).parse_args(argv[2:])
            validate_parsed_serve_args(args)
        out.append({"ok": True, "args": {k: getattr(args, k, None) for k in KEEP}})
    except SystemExit:
        out.append({"ok": False, "error": err.getvalue().strip().splitlines()[-1:]})
    except Exception as exc:
        out.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
print(json.dumps(out, default=str))
