"""Code that runs inside other programs' interpreters (LiteLLM, vLLM, the runtimes' python).
It never imports memoria_cli: tests/test_layout.py checks."""
