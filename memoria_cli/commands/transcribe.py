"""`memoria transcribe`: speech to text, as text, JSON, SRT or WebVTT."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from memoria_cli.cli.client_options import API_KEY, BASE_URL, MODEL, TIMEOUT

if TYPE_CHECKING:
    from memoria_cli.client.api import Api

FORMATS = ("text", "json", "verbose_json", "srt", "vtt")


def register(app: typer.Typer) -> None:
    app.command(name="transcribe")(transcribe_cmd)


def transcribe_cmd(
    file: Path = typer.Argument(..., help="MP3, MP4, MPEG, MPGA, M4A, WAV, WebM, FLAC or OGG."),
    model: str = MODEL,
    language: str = typer.Option(None, "--language", "-l", help="ISO-639-1 code, e.g. en (default: detected)."),
    temperature: float = typer.Option(None, "--temperature", help="0 = most consistent."),
    fmt: str = typer.Option("text", "--format", "-f", help="text, json, verbose_json, srt or vtt."),
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    max_upload_mb: float = typer.Option(
        25.0,
        "--max-upload-mb",
        help="The server's upload limit: larger files are converted to 16 kHz mono and sent in pieces.",
    ),
    base_url: str = BASE_URL,
    api_key: str = API_KEY,
    timeout: float = TIMEOUT,
) -> None:
    """Transcribe an audio file with the transcription model (any length: long files go in pieces).

    Example: `memoria transcribe speech.mp3 -l en --format srt -o speech.srt`.
    """
    from memoria_cli.cli.client_options import connect
    from memoria_cli.client import audio
    from memoria_cli.client.inputs import new_output, read_file
    from memoria_cli.core.errors import InputError

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not 0.05 <= max_upload_mb <= 2048:  # also refuses nan: every comparison with it is false
        raise InputError(
            f"--max-upload-mb {max_upload_mb} is out of range",
            "give 0.05 to 2048 (MB); the default 25 is vLLM's own upload limit",
        )
    if output is not None:
        new_output(output)
    data = read_file(file)
    sends = audio.prepare(data, str(file), int(max_upload_mb * 2**20))
    api, model = connect("transcription", model, base_url, api_key, timeout)
    fields = {"model": model, "response_format": fmt}
    if language:
        fields["language"] = language
    if temperature is not None:
        fields["temperature"] = str(temperature)
    if len(sends) > 1 or sends[0][2] is not data:
        text = _in_pieces(api, sends, fields, fmt, audio.probe(data, str(file)).duration)
    else:
        text = _whole(api, file.name, data, fields, fmt)
    if output is not None:
        from memoria_cli.run.files import write_atomic

        write_atomic(output, text, private=False)
    else:
        sys.stdout.write(text)


def _in_pieces(
    api: Api, sends: list[tuple[float, str, bytes]], fields: dict[str, str], fmt: str, duration: float
) -> str:
    from memoria_cli.cli.console import progress
    from memoria_cli.client.audio import stitch

    parts: list[tuple[float, dict[str, Any]]] = []
    with progress(f"transcribing {len(sends)} piece(s)", len(sends)) as advance:
        for offset, name, chunk in sends:
            resp = api.transcribe(name, chunk, {**fields, "response_format": "json"})
            parts.append((offset, json.loads(resp.text)))
            advance()
    return stitch(fmt, parts, duration)


def _whole(api: Api, name: str, data: bytes, fields: dict[str, str], fmt: str) -> str:
    resp = api.transcribe(name, data, fields)
    text: str = resp.text
    if fmt in ("text", "srt", "vtt") and resp.headers.get("content-type", "").startswith("application/json"):
        # a server that answers JSON where OpenAI answers text (plain vLLM does): render it here
        from memoria_cli.plugins.transcripts import render, wav_duration

        text = render(fmt, json.loads(text), wav_duration(data))
    elif fmt in ("json", "verbose_json"):
        text = json.dumps(json.loads(text), ensure_ascii=False, indent=2) + "\n"
    return text
