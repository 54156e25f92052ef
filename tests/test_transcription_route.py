"""memoria's wrapper of LiteLLM's transcription route, in process against a fake route (as LiteLLM runs it:
the pre-call hook marks the request, the worker answers): rendering, and the verbose_json fallback."""

from __future__ import annotations

import asyncio
import json
import re

from memoria_cli.plugins import litellm_hooks as hooks
from memoria_cli.plugins.transcripts import one_cue_verbose, with_form_field

BOUNDARY = "memoria-test-boundary"


def form(**fields: str) -> bytes:
    out = b""
    for k, v in fields.items():
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n').encode()
    return out + f"--{BOUNDARY}--\r\n".encode()


class Route:
    """LiteLLM's route in miniature: the hook marks the request; a vLLM 0.32 worker that crashes on
    verbose_json for this clip (as `_get_verbose_segments` does) and answers json."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, scope, receive, send):
        raw = b""
        while True:
            m = await receive()
            raw += m.get("body", b"")
            if not m.get("more_body"):
                break
        fmt = re.search(rb'name="response_format"\r\n\r\n([^\r]*)', raw).group(1).decode()
        data = hooks.mark(hooks._REQUEST.get(), {"response_format": fmt}, "atranscription")
        self.asked.append(data["response_format"])
        if data["response_format"] == "verbose_json":
            status, body = 500, {"error": {"message": "IndexError: tuple index out of range"}}
        else:
            status, body = 200, {"text": " the quick brown fox ", "usage": {"type": "duration", "seconds": 3}}
        raw = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"999")],
            }
        )
        await send({"type": "http.response.body", "body": raw})


def call(fmt: str) -> tuple[int, dict, bytes, list[str]]:
    route = Route()
    app = hooks.wrap_route(route)
    body = form(model="whisper", response_format=fmt)
    queue = [
        {"type": "http.request", "body": body[:40], "more_body": True},
        {"type": "http.request", "body": body[40:], "more_body": False},
    ]
    sent: list[dict] = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/audio/transcriptions",
        "headers": [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())],
    }
    asyncio.run(app(scope, receive, send))
    headers = dict(sent[0]["headers"])
    assert int(headers[b"content-length"]) == len(sent[1]["body"])  # the worker's own length is not passed on
    return sent[0]["status"], headers, sent[1]["body"], route.asked


def test_srt_is_rendered_from_the_json_the_worker_was_asked_for():
    status, headers, body, asked = call("srt")
    assert (status, asked) == (200, ["json"])
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert body == b"1\n00:00:00,000 --> 00:00:03,000\nthe quick brown fox\n\n"


def test_verbose_json_that_crashes_the_worker_is_answered_with_one_segment():
    status, headers, body, asked = call("verbose_json")
    assert (status, asked) == (200, ["verbose_json", "json"])  # tried as asked, then again without segments
    assert headers[b"x-memoria-transcript"].startswith(b"one segment")
    answer = json.loads(body)
    assert answer["text"] == "the quick brown fox" and answer["duration"] == 3.0
    assert [(s["start"], s["end"], s["text"]) for s in answer["segments"]] == [(0.0, 3.0, "the quick brown fox")]


def test_json_passes_as_it_came():
    status, headers, body, asked = call("json")
    assert (status, asked, json.loads(body)["text"]) == (200, ["json"], " the quick brown fox ")
    assert b"x-memoria-transcript" not in headers


def test_form_fields_are_replaced_or_added():
    ctype = f"multipart/form-data; boundary={BOUNDARY}".encode()
    replaced = with_form_field(form(model="w", response_format="verbose_json"), ctype, "response_format", "json")
    assert replaced == form(model="w", response_format="json")
    added = with_form_field(form(model="w"), ctype, "response_format", "json")
    assert added == form(model="w", response_format="json")
    assert with_form_field(b"{}", b"application/json", "response_format", "json") is None
    assert one_cue_verbose({"text": ""}, 2.0)["segments"] == []
