"""`memoria embed`: embeddings for texts, lines of a file, JSONL records or stdin; batched and concurrent."""

from __future__ import annotations

import array
import base64
import json
import os
import sys
from pathlib import Path

import typer

from memoria_cli.commands.client_options import API_KEY, BASE_URL, MODEL, TIMEOUT


def register(app: typer.Typer) -> None:
    app.command(name="embed")(embed_cmd)


def read_inputs(texts: list[str], input_file: Path | None) -> list[tuple[object, str]]:
    """[(id or None, text)]: arguments, else the file (one text a line, or JSONL with "text" and "id"), else stdin."""
    from memoria_cli.errors import InputError
    from memoria_cli.inputs import read_file, text_lines

    if texts:
        items, where = [(None, t) for t in texts], "argument"
    elif input_file is not None:
        items, where = _parse_lines(text_lines(read_file(input_file), str(input_file)), str(input_file)), "line"
    elif not sys.stdin.isatty():
        items, where = _parse_lines(text_lines(sys.stdin.buffer.read(), "stdin"), "stdin"), "line"
    else:
        raise InputError("nothing to embed", "give texts, -i FILE, or pipe text in (one per line)")
    if not items:
        raise InputError("nothing to embed: the input is empty")
    for i, (_, text) in enumerate(items, 1):
        if not text.strip():
            raise InputError(f"{where} {i} is empty: nothing to embed there", "remove empty lines")
    return items


def _parse_lines(lines: list[str], name: str) -> list[tuple[object, str]]:
    from memoria_cli.errors import InputError

    while lines and not lines[-1].strip():
        lines = lines[:-1]  # a trailing newline is not an empty text
    if lines and lines[0].lstrip().startswith("{"):
        out = []
        for i, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                out.append((rec.get("id"), rec["text"]))
            except (ValueError, KeyError, AttributeError, TypeError):
                raise InputError(f"{name} line {i} is not a JSON object with a \"text\" field") from None
        return out
    return [(None, line) for line in lines]


MAX_BATCH_CHARS = 256 * 1024  # long documents: fewer per request, so each answers (and shows progress) in time


def batches(items: list[tuple[object, str]], size: int, max_chars: int = MAX_BATCH_CHARS) \
        -> list[list[tuple[object, str]]]:
    """Consecutive runs of at most `size` texts and, past the first text of each, `max_chars` characters."""
    out: list[list[tuple[object, str]]] = []
    chars = 0
    for item in items:
        if not out or len(out[-1]) >= size or chars + len(item[1]) > max_chars:
            out.append([])
            chars = 0
        out[-1].append(item)
        chars += len(item[1])
    return out


def decode(embedding: object) -> array.array:
    """One vector as float32: base64 (what memoria asks for: ~4x fewer bytes and no float parsing on either
    side) or, from a server that ignores `encoding_format`, a JSON list."""
    if isinstance(embedding, str):
        vec = array.array("f", base64.b64decode(embedding))
        if sys.byteorder == "big":
            vec.byteswap()  # OpenAI's base64 embeddings are little-endian float32
        return vec
    return array.array("f", embedding)  # type: ignore[arg-type]


def jsonl_line(ident: object, index: int, vec: array.array) -> str:
    """{"id": ..., "index": i, "embedding": [...]}: 9 significant digits, exactly the float32 the server sent
    (json.dumps would print each as a 17-digit double: 40 % more bytes, twice the time)."""
    head = f'{{"id": {json.dumps(ident)}, ' if ident is not None else "{"
    return f'{head}"index": {index}, "embedding": [{", ".join(map("{:.9g}".format, vec))}]}}\n'


def write_npy(path: Path, rows: list[array.array]) -> None:
    """A float32 .npy file (format 1.0), written without numpy: memoria does not need it otherwise."""
    width = len(rows[0]) if rows else 0
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({len(rows)}, {width}), }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    flat = array.array("f")
    for row in rows:
        flat.extend(row)
    if sys.byteorder == "big":
        flat.byteswap()
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1"))
        f.write(flat.tobytes())


def embed_cmd(
    texts: list[str] = typer.Argument(None, metavar="TEXT", help="Texts to embed (else -i FILE or stdin)."),
    input_file: Path = typer.Option(None, "--input", "-i", help="One text per line, or JSONL {\"id\", \"text\"}."),
    model: str = MODEL,
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of stdout (required for npy)."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl (one {id?, index, embedding} per line) or npy."),
    dimensions: int = typer.Option(None, "--dimensions", help="Ask for shorter embeddings (models that support it)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Texts per request, at most (fewer for long texts)."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight at once."),
    base_url: str = BASE_URL, api_key: str = API_KEY, timeout: float = TIMEOUT,
) -> None:
    """Embed texts with the embedding model, in batches sent concurrently, in input order.

    Example: `memoria embed "Hello, world!"` or `memoria embed -i docs.txt --format npy -o docs.npy`.
    """
    from memoria_cli.client import request_pool
    from memoria_cli.commands.client_options import connect
    from memoria_cli.console import progress
    from memoria_cli.errors import InputError
    from memoria_cli.inputs import new_output

    if fmt not in ("jsonl", "npy") or (fmt == "npy" and output is None):
        raise InputError("--format takes jsonl or npy (npy needs -o FILE)")
    if batch_size < 1 or concurrency < 1:
        raise InputError("--batch-size and --concurrency must be at least 1")
    if output is not None:
        new_output(output)
    items = read_inputs(texts or [], input_file)
    api, model = connect("embedding", model, base_url, api_key, timeout)
    parts = batches(items, batch_size)

    def run(batch: list[tuple[object, str]]) -> list[array.array]:
        body: dict = {"model": model, "input": [t for _, t in batch], "encoding_format": "base64"}
        if dimensions:
            body["dimensions"] = dimensions
        data = sorted(api.post_json("embeddings", body)["data"], key=lambda d: d["index"])
        return [decode(d["embedding"]) for d in data]

    vectors: list[array.array] = []  # for npy; JSONL lines are written as their batch arrives, in order
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
