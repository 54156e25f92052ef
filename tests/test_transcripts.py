"""The transcript renderers (plugins/transcripts.py) and the client's stitching of pieces: exact text, SRT
and WebVTT, in process. Through the proxy and a real Whisper: tests/contract/ and tests/test_demo.py."""

from __future__ import annotations

import json

from memoria_cli.client.audio import stitch
from memoria_cli.plugins.transcripts import cues, render

SEGMENTS = {
    "text": "Hello there. General Kenobi.",
    "segments": [
        {"start": 0.0, "end": 1.25, "text": " Hello there."},
        {"start": 1.5, "end": 3.0, "text": " General Kenobi."},
    ],
}


def test_srt_and_vtt_from_segments():
    assert render("srt", SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n2\n00:00:01,500 --> 00:00:03,000\nGeneral Kenobi.\n\n"
    )
    assert render("vtt", SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n00:00:01.500 --> 00:00:03.000\nGeneral Kenobi.\n\n"
    )
    assert render("text", SEGMENTS) == "Hello there. General Kenobi.\n"


def test_without_usable_segments_one_cue_spans_the_audio():
    overlapping = {
        "text": "a b",
        "segments": [{"start": 0, "end": 2, "text": "a"}, {"start": 1, "end": 3, "text": "b"}],
    }
    assert cues(overlapping, 4.5) == [(0.0, 4.5, "a b")]
    assert render("srt", {"text": "hi"}, 3661.5) == "1\n00:00:00,000 --> 01:01:01,500\nhi\n\n"
    assert cues({"text": "  "}, 2.0) == []


def test_pieces_are_stitched_with_their_offsets():
    parts = [(0.0, {"text": "one"}), (30.0, {"text": "two"})]
    assert stitch("text", parts, 45.0) == "one two\n"
    assert json.loads(stitch("json", parts, 45.0)) == {"text": "one two"}
    assert stitch("srt", parts, 45.0) == (
        "1\n00:00:00,000 --> 00:00:30,000\none\n\n2\n00:00:30,000 --> 00:00:45,000\ntwo\n\n"
    )
