"""Transcriptions as OpenAI answers them: text, SRT and WebVTT rendered from a json / verbose_json body. Pure.

Used by memoria's client and, copied beside LiteLLM's config as memoria_transcripts.py, by memoria's LiteLLM
plug-in (memoria_cli/plugins/litellm_hooks.py). Standard library only: it runs in LiteLLM's interpreter too.
"""

from __future__ import annotations

import contextvars
import io
import itertools
import wave
from typing import Any

RENDERED = ("text", "srt", "vtt")
# In the proxy: what the client asked of the transcription in flight, set by the route wrapper and read by the
# pre-call hook (two module objects of the plug-in, one of this file: see litellm_hooks.py).
REQUEST_NOTE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "memoria_transcription", default=None
)


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues(body: dict[str, Any], duration: float | None) -> list[tuple[float, float, str]]:
    """(start, end, text) per segment when the answer has usable ones, else one cue over the whole audio."""
    segs = [s for s in body.get("segments") or [] if str(s.get("text", "")).strip()]
    ok = (
        segs
        and all(0 <= s["start"] <= s["end"] for s in segs)
        and all(a["end"] <= b["start"] + 0.01 for a, b in itertools.pairwise(segs))
    )
    if ok:
        return [(float(s["start"]), float(s["end"]), str(s["text"]).strip()) for s in segs]
    text = str(body.get("text", "")).strip()
    end = duration or float(body.get("duration") or 0) or float((body.get("usage") or {}).get("seconds") or 0)
    return [(0.0, max(end, 0.001), text)] if text else []


def render(fmt: str, body: dict[str, Any], duration: float | None = None) -> str:
    """OpenAI's text / srt / vtt bodies from a json or verbose_json transcription."""
    if fmt == "text":
        return str(body.get("text", "")).strip() + "\n"
    if fmt == "srt":
        return "".join(
            f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{t}\n\n"
            for i, (a, b, t) in enumerate(cues(body, duration), 1)
        )
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(
            f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{t}\n\n" for a, b, t in cues(body, duration)
        )
    raise ValueError(f"unknown format {fmt!r}")


def wav_duration(data: bytes) -> float | None:
    """Exact length of a WAV upload (the worker only reports whole seconds); None for other formats."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            frames: int = w.getnframes()
            return frames / float(w.getframerate())
    except (wave.Error, EOFError, ValueError):
        return None


def one_cue_verbose(body: dict[str, Any], duration: float | None) -> dict[str, Any]:
    """A verbose_json answer from a json one: the text as one segment over the whole audio."""
    text = str(body.get("text", "")).strip()
    end = duration or float((body.get("usage") or {}).get("seconds") or 0) or 0.0
    segment = {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": round(end, 3),
        "text": text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": 0.0,
        "compression_ratio": 0.0,
        "no_speech_prob": 0.0,
    }
    return {
        "task": "transcribe",
        "language": str(body.get("language") or "unknown"),
        "duration": round(end, 3),
        "text": text,
        "segments": [segment] if text else [],
        "usage": body.get("usage"),
    }


def _form_parts(raw: bytes, content_type: bytes) -> tuple[bytes, list[bytes]] | None:
    """(separator, parts) of a multipart/form-data body; None if it is not one."""
    import re

    m = re.search(rb'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith(b"multipart/form-data") or not m:
        return None
    sep = b"--" + m.group(1)
    parts = raw.split(sep)
    return (sep, parts) if len(parts) >= 3 else None


def form_field(raw: bytes, content_type: bytes, name: str) -> str | None:
    """The value of the text field `name` of a multipart/form-data body, or None."""
    found = _form_parts(raw, content_type)
    field = f'name="{name}"'.encode()
    for part in found[1] if found else ():
        head, _, body = part.partition(b"\r\n\r\n")
        if field in head:
            return body.removesuffix(b"\r\n").decode("utf-8", "replace")
    return None


def with_form_field(raw: bytes, content_type: bytes, name: str, value: str) -> bytes | None:
    """A multipart/form-data body with field `name` set to `value` (replaced, or added); None if the body is
    not multipart."""
    found = _form_parts(raw, content_type)
    if found is None:
        return None
    sep, parts = found
    field = f'name="{name}"'.encode()
    new_part = b"\r\nContent-Disposition: form-data; " + field + b"\r\n\r\n" + value.encode() + b"\r\n"
    for i, part in enumerate(parts):
        head = part.split(b"\r\n\r\n", 1)[0]
        if field in head:
            parts[i] = new_part
            break
    else:
        parts.insert(len(parts) - 1, new_part)
    return sep.join(parts)
