"""Model builders run by the vLLM runtime's Python (they need torch/transformers, which memoria itself does not).

Each is a script: `<runtime python> <file> SRC OUT`. They write into OUT only; the store renames OUT into place.
"""
