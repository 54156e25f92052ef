"""memoria: one machine's GPUs as one private, OpenAI-compatible endpoint."""

__version__ = "0.1.0"
