"""`memoria embed`: embeddings for texts, lines of a file, JSONL records or stdin; batched and concurrent."""

from __future__ import annotations

import array
import os
import sys
from pathlib import Path
from typing import Any

import typer

from memoria_cli.cli.client_options import API_KEY, BASE_URL, MODEL, TIMEOUT


def register(app: typer.Typer) -> None:
    app.command(name="embed")(embed_cmd)


def embed_cmd(
    texts: list[str] = typer.Argument(None, metavar="TEXT", help="Texts to embed (else -i FILE or stdin)."),
    input_file: Path = typer.Option(None, "--input", "-i", help='One text per line, or JSONL {"id", "text"}.'),
    model: str = MODEL,
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of stdout (required for npy)."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl (one {id?, index, embedding} per line) or npy."),
    dimensions: int = typer.Option(None, "--dimensions", help="Ask for shorter embeddings (models that support it)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Texts per request, at most (fewer for long texts)."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight at once."),
    base_url: str = BASE_URL,
    api_key: str = API_KEY,
    timeout: float = TIMEOUT,
) -> None:
    """Embed texts with the embedding model, in batches sent concurrently, in input order.

    Example: `memoria embed "Hello, world!"` or `memoria embed -i docs.txt --format npy -o docs.npy`.
    """
    from memoria_cli.cli.client_options import connect
    from memoria_cli.cli.console import progress
    from memoria_cli.client.api import request_pool
    from memoria_cli.client.embeddings import batches, decode, jsonl_line, read_inputs, write_npy
    from memoria_cli.client.inputs import new_output
    from memoria_cli.core.errors import InputError

    if fmt not in ("jsonl", "npy") or (fmt == "npy" and output is None):
        raise InputError("--format takes jsonl or npy (npy needs -o FILE)")
    if batch_size < 1 or concurrency < 1:
        raise InputError("--batch-size and --concurrency must be at least 1")
    if output is not None:
        new_output(output)
    items = read_inputs(texts or [], input_file)
    api, model = connect("embedding", model, base_url, api_key, timeout)
    parts = batches(items, batch_size)

    def run(batch: list[tuple[object, str]]) -> list[array.array[float]]:
        body: dict[str, Any] = {"model": model, "input": [t for _, t in batch], "encoding_format": "base64"}
        if dimensions:
            body["dimensions"] = dimensions
        data = sorted(api.post_json("embeddings", body)["data"], key=lambda d: d["index"])
        return [decode(d["embedding"]) for d in data]

    vectors: list[array.array[float]] = []  # for npy; JSONL lines are written as their batch arrives, in order
    partial = None
    if output is not None:  # a fresh name beside it, renamed at the end: a failure leaves nothing half-written
        import tempfile

        fd, name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".part")
        os.close(fd)
        partial = Path(name)
    sink = open(partial, "w", encoding="utf-8") if partial and fmt == "jsonl" else sys.stdout
    done = 0
    try:
        with request_pool(concurrency) as pool, progress("embedding", len(items), len(parts) > 1) as advance:
            for b, vs in zip(parts, pool.map(run, parts), strict=True):  # in order, while later ones run
                if fmt == "npy":
                    vectors += vs
                else:
                    for (ident, _), vec in zip(b, vs, strict=True):
                        sink.write(jsonl_line(ident, done, vec))
                        done += 1
                advance(len(b))
        if fmt == "npy":
            write_npy(partial, vectors)
    except BaseException:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise
    finally:
        if sink is not sys.stdout:
            sink.close()
    if partial is not None:
        partial.replace(output)  # only a complete file gets the name asked for
