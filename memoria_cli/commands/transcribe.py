"""`memoria transcribe`: speech to text, as text, JSON, SRT or WebVTT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from memoria_cli.commands.client_options import API_KEY, BASE_URL, MODEL, TIMEOUT

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
    base_url: str = BASE_URL, api_key: str = API_KEY, timeout: float = TIMEOUT,
) -> None:
    """Transcribe an audio file with the transcription model.

    Example: `memoria transcribe speech.mp3 -l en --format srt -o speech.srt`.
    """
    from memoria_cli.commands.client_options import connect
    from memoria_cli.errors import InputError
    from memoria_cli.inputs import check_audio, read_file

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if output is not None and output.exists():
        raise InputError(f"{output} exists", "choose another name or remove it first")
    data = read_file(file)
    check_audio(data, str(file))
    api, model = connect("transcription", model, base_url, api_key, timeout)
    fields = {"model": model, "response_format": fmt}
    if language:
        fields["language"] = language
    if temperature is not None:
        fields["temperature"] = str(temperature)
    resp = api.transcribe(file.name, data, fields)
    text = resp.text
    if fmt in ("text", "srt", "vtt") and resp.headers.get("content-type", "").startswith("application/json"):
        # a server that answers JSON where OpenAI answers text (plain vLLM does): render it here
        from memoria_cli.litellm_hooks import render, wav_duration

        text = render(fmt, json.loads(text), wav_duration(data))
    elif fmt in ("json", "verbose_json"):
        text = json.dumps(json.loads(text), ensure_ascii=False, indent=2) + "\n"
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
