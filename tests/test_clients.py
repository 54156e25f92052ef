"""The client commands against the real tiny stack (request shape, streaming, reasoning split, schema, pages,
audio formats), and their bad-input table: one line, a documented exit code, no traceback."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from memoria_cli.client.api import Api, Endpoint, resolve_endpoint
from memoria_cli.core.errors import ServerError
from tests.helpers import run_memoria, run_state, sox_converted, wav_bytes

slow = pytest.mark.slow


def in_a_terminal(args: list[str], stdin: bytes = b"", timeout: float = 120) -> str:
    """Run memoria with stdin/stdout on a pseudo-terminal (so it streams and can be interactive)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "memoria_cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
        env=os.environ.copy(),
    )
    os.close(slave)
    if stdin:
        os.write(master, stdin)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout)
    os.close(master)
    return out.decode(errors="replace").replace("\r\n", "\n")


# ---------------------------------------------------------------------------------------------- chat


@slow
def test_chat_answer_on_stdout_reasoning_apart(tiny_stack):
    r = run_memoria(
        "chat",
        "What is the capital of France?",
        "-s",
        "Be brief.",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "-o",
        "seed",
        "7",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Hello world" and "hmm" in r.stderr
    r = run_memoria("chat", "hi", "--no-reasoning")
    assert r.stdout.strip() == "Hello world" and "hmm" not in r.stderr
    r = run_memoria("chat", "hi", "--reasoning-only")
    assert r.stdout.strip() == "hmm"
    data = json.loads(run_memoria("chat", "hi", "--json", "-m", "test/Tiny-Chat").stdout)
    assert data["content"].strip() == "Hello world" and data["reasoning"].strip() == "hmm"
    assert data["usage"]["completion_tokens"] > 0


@slow
def test_chat_streams_on_a_terminal_and_is_interactive(tiny_stack):
    out = in_a_terminal(["chat", "hi"])
    assert "hmm" in out and "Hello world" in out
    out = in_a_terminal(["chat"], stdin=b"first question\nsecond question\n/exit\n")
    assert out.count("Hello world") == 2 and "chatting with tiny-chat" in out


@slow
def test_chat_question_from_stdin_and_completion(tiny_stack):
    p = subprocess.run(
        [sys.executable, "-m", "memoria_cli", "chat"], input="hello there", capture_output=True, text=True, timeout=120
    )
    assert p.stdout.strip() == "Hello world"
    r = run_memoria("chat", "--completion", "Once upon a time", "--max-tokens", "4")
    assert r.returncode == 0 and r.stdout.strip()
    out = in_a_terminal(["chat", "--completion", "Once upon a time", "--max-tokens", "4"])
    assert "Error" not in out and "error" not in out


@slow
def test_chat_schema_is_enforced_and_validated(tiny_stack, tmp_path):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "ok": {"type": "boolean"}},
        "required": ["answer", "ok"],
        "additionalProperties": False,
    }
    f = tmp_path / "s.json"
    f.write_text(json.dumps(schema))
    r = run_memoria("chat", "Is the sky blue?", "--schema", str(f), "--max-tokens", "64")
    assert r.returncode == 0, r.stderr
    value = json.loads(r.stdout)
    assert set(value) == {"answer", "ok"}
    r = run_memoria("chat", "x", "--schema", '{"type": 12}')
    assert r.returncode == 3 and "not a valid JSON Schema" in r.stderr


def test_answer_that_breaks_the_schema_is_refused():
    from memoria_cli.client.chat import check_answer

    with pytest.raises(ServerError, match="at age"):
        check_answer('{"age": "old"}', {"type": "object", "properties": {"age": {"type": "integer"}}})
    with pytest.raises(ServerError, match="not JSON"):
        check_answer("Hello", {"type": "object"})


def test_option_pairs():
    from memoria_cli.client.chat import parse_options
    from memoria_cli.commands.chat import join_option_pairs

    assert join_option_pairs(["chat", "q", "-o", "seed", "42", "-o", "x=y"]) == [
        "chat",
        "q",
        "-o",
        "seed=42",
        "-o",
        "x=y",
    ]
    assert parse_options(["seed=42", 'stop=["a"]', "name=bob"]) == {"seed": 42, "stop": ["a"], "name": "bob"}


# --------------------------------------------------------------------------------------------- embed


@slow
def test_embed_args_file_jsonl_stdin_npy(tiny_stack, tmp_path):
    r = run_memoria("embed", "Hello, world!", "second")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["index"] for x in rows] == [0, 1] and len(rows[0]["embedding"]) == 64
    lines = [f"sentence number {i}" for i in range(50)]
    f = tmp_path / "in.txt"
    f.write_text("\n".join(lines) + "\n")
    r = run_memoria("embed", "-i", str(f), "--batch-size", "8", "--concurrency", "3")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["index"] for x in rows] == list(range(50))
    single = json.loads(run_memoria("embed", lines[37]).stdout)["embedding"]
    assert np.allclose(rows[37]["embedding"], single, atol=1e-5)  # batched, concurrent, still in order
    j = tmp_path / "in.jsonl"
    j.write_text('{"id": "a", "text": "one"}\n{"id": 7, "text": "two"}\n')
    rows = [json.loads(x) for x in run_memoria("embed", "-i", str(j)).stdout.splitlines()]
    assert [x["id"] for x in rows] == ["a", 7]
    p = subprocess.run(
        [sys.executable, "-m", "memoria_cli", "embed"],
        input="alpha\nbeta\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert len(p.stdout.splitlines()) == 2
    out = tmp_path / "v.npy"
    assert run_memoria("embed", "-i", str(f), "--format", "npy", "-o", str(out)).returncode == 0
    assert np.load(out).shape == (50, 64)
    r = run_memoria("embed", "x", "--format", "npy", "-o", str(out))
    assert r.returncode == 3 and "exists" in r.stderr  # never overwrites
    jl = tmp_path / "v.jsonl"
    assert run_memoria("embed", "-i", str(f), "-o", str(jl)).returncode == 0
    from_jsonl = np.array([json.loads(x)["embedding"] for x in jl.read_text().splitlines()], dtype=np.float32)
    assert np.array_equal(from_jsonl, np.load(out))  # the same float32 values, in text and in .npy
    long = tmp_path / "long.txt"  # batch 5 of 7 fails (a text past the model's context): after 4 were written
    long.write_text("\n".join(lines[:40] + ["word " * 3000] + lines[40:]) + "\n")
    r = run_memoria(
        "embed", "-i", str(long), "-o", str(tmp_path / "never.jsonl"), "--batch-size", "8", "--concurrency", "1"
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in.jsonl", "in.txt", "long.txt", "v.jsonl", "v.npy"]


def test_embedding_lines_and_base64_vectors():
    import array
    import base64

    from memoria_cli.client.embeddings import decode, jsonl_line

    vec = np.array([0.1, -2.5e-8, 3.4028235e38, 1 / 3], dtype="<f4")
    assert decode(base64.b64encode(vec.tobytes()).decode()).tolist() == vec.tolist()
    assert decode([0.5, 1.0]).tolist() == [0.5, 1.0]  # a server that ignores encoding_format
    rec = json.loads(jsonl_line("doc-1", 3, array.array("f", vec.tolist())))
    assert rec["id"] == "doc-1" and rec["index"] == 3
    assert np.array_equal(np.array(rec["embedding"], dtype=np.float32), vec)  # 9 digits: float32 exactly
    assert json.loads(jsonl_line(None, 0, array.array("f", [1.0]))) == {"index": 0, "embedding": [1.0]}


def test_embedding_batches_are_bounded_by_count_and_size_and_keep_order():
    from memoria_cli.client.embeddings import batches

    items = [(i, "x" * n) for i, n in enumerate([10, 10, 10, 10, 10])]
    assert [[i for i, _ in b] for b in batches(items, 2)] == [[0, 1], [2, 3], [4]]
    assert [[i for i, _ in b] for b in batches(items, 256, max_chars=25)] == [[0, 1], [2, 3], [4]]
    big = [(0, "x" * 100), (1, "y"), (2, "x" * 100)]  # a text longer than the budget goes alone, never dropped
    assert [[i for i, _ in b] for b in batches(big, 256, max_chars=50)] == [[0], [1], [2]]
    assert batches([], 4) == []


# ------------------------------------------------------------------------------------------ ocr


@slow
def test_ocr_images_and_pdf_pages(tiny_stack, tmp_path):
    img = tmp_path / "page.png"
    Image.fromarray((np.random.default_rng(0).random((80, 120, 3)) * 255).astype("uint8")).save(img)
    r = run_memoria("ocr", str(img), "--max-tokens", "4")
    assert r.returncode == 0, r.stderr
    big = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), "white").save(big)
    pdf = tmp_path / "doc.pdf"
    Image.new("RGB", (200, 200), "white").save(pdf, save_all=True, append_images=[Image.new("RGB", (200, 200))] * 2)
    r = run_memoria("ocr", str(big), str(pdf), "--pages", "2-3", "--max-tokens", "4", "--markdown")
    assert r.returncode == 0, r.stderr
    assert "downscaled" in r.stderr
    assert r.stdout.count("==> ") == 3 and "[page 2]" in r.stdout and "[page 3]" in r.stdout
    out = tmp_path / "out"
    r = run_memoria("ocr", str(pdf), "-o", str(out), "--max-tokens", "4")
    assert sorted(p.name for p in out.iterdir()) == ["doc-p1.txt", "doc-p2.txt", "doc-p3.txt"]
    r = run_memoria("ocr", str(pdf), "-o", str(out), "--max-tokens", "4")
    assert r.returncode == 3 and "exists" in r.stderr


# ------------------------------------------------------------------------------------ transcribe


@slow
@pytest.mark.parametrize("fmt", ["text", "json", "verbose_json", "srt", "vtt"])
def test_transcribe_formats(tiny_stack, tmp_path, fmt):
    f = tmp_path / "a.wav"
    f.write_bytes(wav_bytes(1.5))
    r = run_memoria("transcribe", str(f), "-l", "en", "--format", fmt, "--temperature", "0")
    assert r.returncode == 0, r.stderr
    if fmt == "srt":
        assert r.stdout.startswith("1\n00:00:00,000 --> 00:00:01,500\n")
    elif fmt == "vtt":
        assert r.stdout.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n")
    elif fmt in ("json", "verbose_json"):
        assert "text" in json.loads(r.stdout)
    out = tmp_path / f"a.{fmt}"
    assert run_memoria("transcribe", str(f), "--format", fmt, "-o", str(out)).returncode == 0 and out.read_text()


@slow
def test_transcribe_flac_and_ogg(tiny_stack, tmp_path):
    f = tmp_path / "a.wav"
    f.write_bytes(wav_bytes(1.0))
    for ext in ("flac", "ogg"):
        r = run_memoria("transcribe", str(sox_converted(f, ext)), "-l", "en")
        assert r.returncode == 0, (ext, r.stderr)


@slow
def test_models_lists_kinds(tiny_stack):
    rows = json.loads(run_memoria("models", "--json").stdout)
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds == {
        "tiny-embed": "embedding",
        "tiny-chat": "chat",
        "tiny-vl": "vision",
        "tiny-whisper": "transcription",
    }
    assert all(r["ready"] for r in rows)


# --------------------------------------------------------------------------------- bad input table


def bad_inputs(tmp: os.PathLike) -> list[tuple[list[str], str]]:
    from pathlib import Path

    tmp = Path(tmp)
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "corrupt.png").write_bytes(b"garbage" * 20)
    (tmp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    good = tmp / "good.png"
    Image.new("RGB", (300, 300), "white").save(good)
    (tmp / "truncated.png").write_bytes(good.read_bytes()[:200])
    bomb = tmp / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb)  # 100 Mpx, a few KB on disk
    import pypdfium2

    empty = pypdfium2.PdfDocument.new()  # a well-formed PDF with zero pages
    empty.save(str(tmp / "nopages.pdf"))
    empty.close()
    # a real /Encrypt dictionary (standard handler) whose user password is not empty
    (tmp / "locked.pdf").write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 100 100]>>endobj\n4 0 obj<</Filter/Standard/V 1/R 2/O<"
        + b"11" * 32
        + b">/U<"
        + b"22" * 32
        + b">/P -4>>endobj\ntrailer<</Root 1 0 R/Encrypt 4 0 R/ID[<"
        + b"33" * 16
        + b"><"
        + b"33" * 16
        + b">]>>\n%%EOF\n"
    )
    (tmp / "notes.txt").write_bytes("caf\xe9\n".encode("latin1"))
    (tmp / "noise.mp3").write_bytes(b"this is not audio at all" * 10)
    (tmp / "empty.txt").write_text("\n")
    return [
        (["ocr", str(tmp / "missing.png")], "file not found"),
        (["ocr", "/proc/self/mem"], "cannot read"),  # unreadable (root reads any mode: this one fails with EIO)
        (["ocr", str(tmp)], "is a folder"),
        (["ocr", str(tmp / "empty.png")], "is empty"),
        (["ocr", str(tmp / "corrupt.png")], "not an image"),
        (["ocr", str(tmp / "broken.png")], "damaged"),
        (["ocr", str(tmp / "locked.pdf")], "encrypted"),
        (["ocr", str(tmp / "truncated.png")], "damaged"),
        (["ocr", str(bomb)], "decompression bomb"),
        (["ocr", str(tmp / "nopages.pdf")], "no pages"),
        (["transcribe", str(tmp / "noise.mp3")], "not audio"),
        (["transcribe", str(tmp / "good.png")], "no audio track"),
        (["embed", "-i", str(tmp / "notes.txt")], "not UTF-8"),
        (["embed", "-i", str(tmp / "empty.txt")], "nothing to embed"),
        (["embed", "ok", ""], "argument 2 is empty"),
    ]


@pytest.mark.medium
def test_bad_input_table(tmp_path, home):
    for args, words in bad_inputs(tmp_path):
        r = run_memoria(*args)
        assert r.returncode == 3, (args, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


@pytest.mark.medium
def test_unknown_model_and_server_not_running(tmp_path, home):
    r = run_memoria("chat", "hi", "--base-url", "http://127.0.0.1:9/v1")
    assert r.returncode == 9 and "cannot reach" in r.stderr and "Traceback" not in r.stderr


@slow
def test_unknown_model_gets_did_you_mean(tiny_stack):
    r = run_memoria("chat", "hi", "-m", "tiny-caht")
    assert r.returncode == 3 and "did you mean 'tiny-chat'" in r.stderr


def test_server_errors_and_cut_streams_are_one_line():
    """Only memoria's error mapping under test here: a stand-in transport answers 500, 401, and a cut stream."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        if request.url.path.endswith("/embeddings"):
            return httpx.Response(500, json={"error": {"message": "upstream exploded"}})
        if request.url.path.endswith("/completions") and not json.loads(request.content).get("stream"):
            return httpx.Response(401, json={"error": {"message": "Authentication Error"}})
        return httpx.Response(
            200,
            content=b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n',
            headers={"content-type": "text/event-stream"},
        )

    api = Api(Endpoint("http://x/v1", "k", "test"), transport=httpx.MockTransport(handler))
    assert api.check_model("m") == "m"
    with pytest.raises(ServerError, match="500: upstream exploded"):
        api.post_json("embeddings", {"model": "m", "input": "x"})
    with pytest.raises(ServerError, match="401") as e:
        api.post_json("chat/completions", {"model": "m"})
    assert "MEMORIA_API_KEY" in e.value.line()
    with pytest.raises(ServerError, match="cut before it ended"):
        list(api.stream("chat/completions", {"model": "m"}))


def test_endpoint_resolution_order():
    state = run_state(url="http://127.0.0.1:9999/v1")
    assert resolve_endpoint("http://a/v1", None, {}, state).base_url == "http://a/v1"
    assert (
        resolve_endpoint(
            None, None, {"MEMORIA_BASE_URL": "http://b/v1", "OPENAI_API_BASE": "http://c/v1"}, state
        ).base_url
        == "http://b/v1"
    )
    assert resolve_endpoint(None, None, {"OPENAI_API_BASE": "http://c/v1"}, state).base_url == "http://c/v1"
    assert resolve_endpoint(None, None, {}, state).base_url == "http://127.0.0.1:9999/v1"
    assert resolve_endpoint(None, None, {}, None).base_url == "http://127.0.0.1:8200/v1"
    assert resolve_endpoint(None, None, {"OPENAI_API_KEY": "k1", "MEMORIA_API_KEY": "k2"}, None).api_key == "k2"


@slow
def test_long_audio_goes_in_pieces_and_is_stitched(tiny_stack, tmp_path):
    f = tmp_path / "long.wav"
    f.write_bytes(wav_bytes(6.0, rate=44100))  # 6 s; over a 0.05 MiB limit it needs 4 pieces at 16 kHz mono
    r = run_memoria("transcribe", str(f), "-l", "en", "--format", "srt", "--max-upload-mb", "0.05")
    assert r.returncode == 0, r.stderr
    cues = [b.split("\n") for b in r.stdout.strip().split("\n\n")]
    starts = [c[1].split(" --> ")[0] for c in cues]
    assert [c[0] for c in cues] == [str(i) for i in range(1, len(cues) + 1)] and len(cues) >= 3
    assert starts == sorted(starts) and starts[0] == "00:00:00,000"
    assert cues[-1][1].endswith("--> 00:00:06,000")
    r = run_memoria("transcribe", str(f), "--format", "json", "--max-upload-mb", "0.05")
    assert r.returncode == 0 and "text" in json.loads(r.stdout)


@slow
def test_audio_the_server_may_not_decode_is_converted(tiny_stack, tmp_path):
    f = tmp_path / "a.wav"
    f.write_bytes(wav_bytes(1.0))
    r = run_memoria("transcribe", str(sox_converted(f, "aiff")), "-l", "en", "--format", "vtt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n")
