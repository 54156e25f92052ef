"""Audio for `memoria transcribe`: probe locally with PyAV (FFmpeg), convert what the server may not decode,
and split what is over the upload limit into pieces sent one after another, stitched back in order.

Pieces are 16 kHz mono 16-bit WAV (what Whisper hears anyway): 32 kB a second, so a 25 MB limit holds 13 min.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

from memoria_cli.core.errors import InputError

SERVER_FORMATS = {"wav", "mp3", "flac", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mp4", "webm"}
RATE = 16000


@dataclass(frozen=True)
class Probe:
    container: str
    codec: str
    duration: float


def probe(data: bytes, name: str) -> Probe:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as c:
            if not c.streams.audio:
                raise InputError(f"{name} has no audio track")
            s = c.streams.audio[0]
            dur = float(c.duration) / 1e6 if c.duration else float((s.duration or 0) * (s.time_base or 0))
            return Probe(container=c.format.name, codec=s.codec_context.name, duration=dur)
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError, ValueError):
        raise InputError(
            f"{name} is not audio memoria can decode", "use MP3, MP4/M4A, WAV, WebM, FLAC or OGG"
        ) from None


def decode_mono16k(data: bytes, name: str) -> bytes:
    """The whole file as 16 kHz mono signed 16-bit PCM."""
    import av

    out = bytearray()
    try:
        with av.open(io.BytesIO(data), mode="r") as c:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in c.decode(audio=0):
                for f in resampler.resample(frame):
                    out += bytes(f.planes[0])[: f.samples * 2]
            for f in resampler.resample(None):
                out += bytes(f.planes[0])[: f.samples * 2]
    except (av.error.FFmpegError, ValueError) as exc:
        raise InputError(f"{name} could not be decoded ({exc})", "re-encode it, e.g. `ffmpeg -i IN out.wav`") from None
    if not out:
        raise InputError(f"{name} holds no audio samples")
    return bytes(out)


def wav(pcm: bytes) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return buf.getvalue()


def pieces(pcm: bytes, max_bytes: int) -> list[tuple[float, bytes]]:
    """(start seconds, WAV bytes) pieces, each under `max_bytes`, cut at whole samples."""
    per = max(2, (max_bytes - 64) // 2 * 2)  # PCM bytes per piece, leaving room for the WAV header
    return [(i / 2 / RATE, wav(pcm[i : i + per])) for i in range(0, len(pcm), per)]


def prepare(data: bytes, name: str, max_bytes: int) -> list[tuple[float, str, bytes]]:
    """[(offset, filename, bytes)] to send: the file itself when the server takes it, else converted/split."""
    p = probe(data, name)
    if p.container in SERVER_FORMATS and len(data) <= max_bytes:
        return [(0.0, name, data)]
    pcm = decode_mono16k(data, name)
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return [(start, f"{stem}-{i}.wav", chunk) for i, (start, chunk) in enumerate(pieces(pcm, max_bytes))]


def stitch(fmt: str, parts: list[tuple[float, dict[str, Any]]], duration: float | None = None) -> str:
    """One answer from the pieces' JSON answers: text joined, SRT/VTT cues and segments shifted by their offset."""
    import json

    from memoria_cli.plugins.transcripts import cues, render

    text = " ".join(str(b.get("text", "")).strip() for _, b in parts).strip()
    if fmt in ("text", "json"):
        return render("text", {"text": text}) if fmt == "text" else json.dumps({"text": text}, indent=2) + "\n"
    segments: list[dict[str, Any]] = []
    for n, (offset, body) in enumerate(parts):
        end = parts[n + 1][0] if n + 1 < len(parts) else duration
        for a, b, t in cues(body, (end - offset) if end else None):
            segments.append({"id": len(segments), "start": a + offset, "end": b + offset, "text": t})
    if fmt == "verbose_json":
        return json.dumps({"text": text, "duration": duration, "segments": segments}, indent=2) + "\n"
    return render(fmt, {"text": text, "segments": segments}, duration)
