"""Transcriptions as OpenAI answers them: text, SRT and WebVTT rendered from a json / verbose_json body. Pure.

Used by memoria's client and, copied beside LiteLLM's config as memoria_transcripts.py, by memoria's LiteLLM
plug-in (memoria_cli/litellm_hooks.py). Standard library only: it runs in LiteLLM's interpreter too.
"""

from __future__ import annotations

import io
import itertools
import wave
from typing import Any

RENDERED = ("text", "srt", "vtt")


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues(body: dict[str, Any], duration: float | None) -> list[tuple[float, float, str]]:
    """(start, end, text) per segment when the answer has usable ones, else one cue over the whole audio."""
    segs = [s for s in body.get("segments") or [] if str(s.get("text", "")).strip()]
    ok = segs and all(0 <= s["start"] <= s["end"] for s in segs) and all(
        a["end"] <= b["start"] + 0.01 for a, b in itertools.pairwise(segs))
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
        return "".join(f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{t}\n\n"
                       for i, (a, b, t) in enumerate(cues(body, duration), 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{t}\n\n"
                                      for a, b, t in cues(body, duration))
    raise ValueError(f"unknown format {fmt!r}")


def wav_duration(data: bytes) -> float | None:
    """Exact length of a WAV upload (the worker only reports whole seconds); None for other formats."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, ValueError):
        return None
