"""The chat client's logic: one chat turn or legacy completion, streamed or whole, reasoning kept apart from
the answer; schemas for structured output, checked before anything is printed; `-o key value` parameters."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from memoria_cli.client.api import Api


class Output(Protocol):
    """Where an answer goes as it arrives (commands/chat.py's Printer: the terminal)."""

    def reasoning(self, text: str) -> None: ...
    def answer(self, text: str) -> None: ...
    def end(self) -> None: ...


def reasoning_of(obj: dict[str, Any]) -> str:
    """Reasoning from a message or delta: `reasoning_content` (the API guide's) or `reasoning` (newer vLLM)."""
    return obj.get("reasoning_content") or obj.get("reasoning") or ""


def load_schema(text: str) -> dict[str, Any]:
    """--schema: a JSON file's path or inline JSON."""
    from memoria_cli.client.inputs import read_file
    from memoria_cli.core.errors import InputError

    raw = text if text.lstrip().startswith("{") else read_file(text).decode("utf-8", errors="replace")
    try:
        schema = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"--schema is not valid JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise InputError("--schema must be a JSON object (a JSON Schema)")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InputError(f"--schema is not a valid JSON Schema: {exc.message}") from None
    return schema


def check_answer(answer: str, schema: dict[str, Any]) -> Any:
    from jsonschema import Draft202012Validator

    from memoria_cli.core.errors import ServerError

    try:
        value = json.loads(answer)
    except ValueError:
        raise ServerError(
            "the answer is not JSON, so it does not satisfy the schema",
            "try again, or raise --max-tokens if it was cut short",
        ) from None
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        where = "/".join(map(str, errors[0].path)) or "(top)"
        raise ServerError(f"the answer does not satisfy the schema at {where}: {errors[0].message}", "try again")
    return value


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """-o key value: JSON values where they parse (numbers, true, lists), else strings."""
    from memoria_cli.core.errors import InputError

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise InputError(f"-o {pair!r}: give a key and a value, e.g. -o seed 42")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def chat_once(
    api: Api,
    model: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    stream: bool,
    printer: Output,
    as_json: bool,
    schema: dict[str, Any] | None,
) -> str:
    """One chat turn: streamed to `printer` as it comes, or whole (validated against `schema`); the answer."""
    body = {"model": model, "messages": messages, **params}
    if stream:
        pieces: list[str] = []
        for chunk in api.stream("chat/completions", body):
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                printer.reasoning(reasoning_of(delta))
                if delta.get("content"):
                    pieces.append(delta["content"])
                    printer.answer(delta["content"])
        printer.end()
        return "".join(pieces)
    data = api.post_json("chat/completions", body)
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: str = msg.get("content") or ""
    reasoning = reasoning_of(msg)
    if schema is not None:
        check_answer(content, schema)
    if as_json:
        print(
            json.dumps(
                {
                    "content": content,
                    "reasoning": reasoning or None,
                    "finish_reason": choice.get("finish_reason"),
                    "usage": data.get("usage"),
                }
            )
        )
        return content
    printer.reasoning(reasoning)
    printer.answer(content.strip() if schema is None else content)
    printer.end()
    return content


def complete_once(
    api: Api, model: str, prompt: str, params: dict[str, Any], stream: bool, printer: Output, as_json: bool
) -> str:
    """One legacy completion of `prompt`: streamed or whole; the text."""
    body = {"model": model, "prompt": prompt, **params}
    if stream:
        parts: list[str] = []
        for chunk in api.stream("completions", body):
            for choice in chunk.get("choices") or []:
                text = choice.get("text") or ""  # LiteLLM's last chunk carries text null
                parts.append(text)
                printer.answer(text)
        printer.end()
        return "".join(parts)
    data = api.post_json("completions", body)
    choice = (data.get("choices") or [{}])[0]
    text = choice.get("text") or ""
    if as_json:
        print(
            json.dumps(
                {
                    "content": text,
                    "reasoning": None,
                    "finish_reason": choice.get("finish_reason"),
                    "usage": data.get("usage"),
                }
            )
        )
    else:
        printer.answer(text)
        printer.end()
    return text
