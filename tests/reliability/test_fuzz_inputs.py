"""Fuzzed file inputs (Hypothesis): whatever the bytes, the readers answer with data or one InputError."""

from __future__ import annotations

import struct
import zlib
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoria_cli.core.errors import InputError

PNG_HEAD = b"\x89PNG\r\n\x1a\n"
PREFIXES = [
    b"",
    PNG_HEAD,
    b"%PDF-1.4\n",
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
    b"fLaC",
    b"OggS",
    b"ID3",
    b"\xff\xfb",
    b"GIF89a",
    b"\xff\xd8\xff",
    b"BM",
    b"RIFF\x00\x00\x00\x00WEBP",
]
# A deadline: an input that takes seconds (or gigabytes) to refuse is a bug, not a slow test. 10 s, not less:
# the suite shares 2 cores with other tests' processes, and a loaded machine is not a hung decoder.
FUZZ = settings(max_examples=150, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow])


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@FUZZ
@given(st.sampled_from(PREFIXES), st.binary(max_size=2048))
def test_images_and_pdfs(prefix, tail):
    from memoria_cli.client.inputs import load_image, pdf_pages
    from memoria_cli.commands.ocr import pages_of  # noqa: F401  (the command's own reader path)

    data = prefix + tail
    try:
        if data.startswith(b"%PDF-"):
            for _, render in pdf_pages(data, "fuzz.pdf", None):
                render()
        else:
            load_image(data, "fuzz.img")
    except InputError:
        pass


@FUZZ
@given(st.integers(1, 200_000), st.integers(1, 200_000), st.binary(max_size=256))
def test_png_headers_that_lie(width, height, body):
    from memoria_cli.client.inputs import load_image

    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    data = PNG_HEAD + ihdr + png_chunk(b"IDAT", zlib.compress(body)) + png_chunk(b"IEND", b"")
    try:
        load_image(data, "fuzz.png")
    except InputError:
        pass


@FUZZ
@given(st.sampled_from(PREFIXES), st.binary(max_size=4096))
def test_audio(prefix, tail):
    from memoria_cli.client.audio import prepare

    try:
        prepare(prefix + tail, "fuzz.audio", 25 * 2**20)
    except InputError:
        pass


@FUZZ
@given(st.binary(max_size=512))
def test_text_and_jsonl(data):
    from memoria_cli.client.embeddings import _parse_lines
    from memoria_cli.client.inputs import text_lines

    try:
        _parse_lines(text_lines(data, "fuzz.txt"), "fuzz.txt")
    except InputError:
        pass


@FUZZ
@given(st.text(max_size=40))
def test_pages_and_sizes(spec):
    from memoria_cli.client.inputs import parse_pages
    from memoria_cli.core.units import parse_size

    for fn in (lambda: parse_pages(spec, 5), lambda: parse_size(spec)):
        try:
            fn()
        except InputError:
            pass
