"""`memoria chat`: ask the chat model; reasoning shown apart from the answer; structured output; a REPL."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from memoria_cli.commands.client_options import API_KEY, BASE_URL, MODEL, TIMEOUT


def register(app: typer.Typer) -> None:
    app.command(name="chat")(chat_cmd)


def reasoning_of(obj: dict[str, Any]) -> str:
    """Reasoning from a message or delta: `reasoning_content` (the API guide's) or `reasoning` (newer vLLM)."""
    return obj.get("reasoning_content") or obj.get("reasoning") or ""


def load_schema(text: str) -> dict[str, Any]:
    """--schema: a JSON file's path or inline JSON."""
    from memoria_cli.errors import InputError
    from memoria_cli.inputs import read_file

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

    from memoria_cli.errors import ServerError

    try:
        value = json.loads(answer)
    except ValueError:
        raise ServerError("the answer is not JSON, so it does not satisfy the schema",
                          "try again, or raise --max-tokens if it was cut short") from None
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        where = "/".join(map(str, errors[0].path)) or "(top)"
        raise ServerError(f"the answer does not satisfy the schema at {where}: {errors[0].message}", "try again")
    return value


def join_option_pairs(argv: list[str]) -> list[str]:
    """`-o key value` (llm's spelling) -> `-o key=value`, which is what the parser takes (Typer has no
    repeatable two-value options)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("-o", "--option") and i + 2 < len(argv) and "=" not in argv[i + 1]:
            out += [a, f"{argv[i + 1]}={argv[i + 2]}"]
            i += 3
        else:
            out.append(a)
            i += 1
    return out


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """-o key value: JSON values where they parse (numbers, true, lists), else strings."""
    from memoria_cli.errors import InputError

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


class Printer:
    """Answer on stdout; reasoning dimmed on stderr (or on stdout with --reasoning-only, or hidden)."""

    def __init__(self, show_reasoning: bool, reasoning_only: bool) -> None:
        from memoria_cli.console import err

        self.err, self.show, self.only = err(), show_reasoning, reasoning_only
        self.in_reasoning = False

    def reasoning(self, text: str) -> None:
        if self.only:
            sys.stdout.write(text)
            sys.stdout.flush()
        elif self.show and text:
            self.in_reasoning = True
            self.err.print(text, style="dim", end="", markup=False, highlight=False)

    def answer(self, text: str) -> None:
        if self.in_reasoning:
            self.err.print()
            self.in_reasoning = False
        if not self.only:
            sys.stdout.write(text)
            sys.stdout.flush()

    def end(self) -> None:
        if self.in_reasoning:
            self.err.print()
        sys.stdout.write("\n")
        sys.stdout.flush()


def chat_cmd(
    question: str = typer.Argument(None, help="The question (else stdin; without either, an interactive session)."),
    model: str = MODEL,
    system: str = typer.Option(None, "--system", "-s", help="System prompt."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Longest answer, in tokens."),
    temperature: float = typer.Option(None, "--temperature", help="0 = deterministic; higher = more varied."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus sampling."),
    stop: list[str] = typer.Option(None, "--stop", metavar="TEXT", help="Stop sequence (repeatable)."),
    option: list[str] = typer.Option(None, "--option", "-o", metavar="KEY VALUE",
                                help="Any other parameter: -o key value (repeatable)."),
    schema: str = typer.Option(None, "--schema", help="JSON Schema (file or inline JSON): structured output, "
                               "validated before printing."),
    no_stream: bool = typer.Option(False, "--no-stream", help="Wait for the whole answer (default off a terminal)."),
    no_reasoning: bool = typer.Option(False, "--no-reasoning", help="Hide the reasoning."),
    reasoning_only: bool = typer.Option(False, "--reasoning-only", help="Print only the reasoning, on stdout."),
    completion: bool = typer.Option(False, "--completion", help="Legacy /v1/completions with the text as prompt."),
    as_json: bool = typer.Option(False, "--json", help="Print {content, reasoning, finish_reason, usage} as JSON."),
    base_url: str = BASE_URL, api_key: str = API_KEY, timeout: float = TIMEOUT,
) -> None:
    """Ask the chat model. The answer goes to stdout; its reasoning, dimmed, to stderr.

    Examples: `memoria chat "What is the capital of France?"`,
    `memoria chat --schema person.json "Alice is 28 and an engineer"`, `memoria chat` (interactive).
    """
    from memoria_cli.commands.client_options import connect
    from memoria_cli.errors import InputError

    interactive = question is None and sys.stdin.isatty()
    if question is None and not interactive:
        question = sys.stdin.read().strip()
        if not question:
            raise InputError("nothing to ask: stdin was empty")
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                              "stop": stop or None}
    params = {k: v for k, v in params.items() if v is not None} | parse_options(option)
    the_schema = load_schema(schema) if schema else None
    if the_schema is not None:
        params["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": "answer", "schema": the_schema, "strict": True}}
    api, model = connect("chat", model, base_url, api_key, timeout)
    stream = not no_stream and not as_json and the_schema is None and sys.stdout.isatty()
    printer = Printer(show_reasoning=not no_reasoning, reasoning_only=reasoning_only)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def ask(text: str) -> str:
        if completion:
            return _complete(api, model, text, params, stream, printer, as_json)
        history.append({"role": "user", "content": text})
        answer = _chat(api, model, history, params, stream, printer, as_json, the_schema)
        history.append({"role": "assistant", "content": answer})  # reasoning is not sent back
        return answer

    if not interactive:
        ask(question)
        return
    from memoria_cli.console import err

    err().print(f"chatting with {model}; /exit or Ctrl-D ends", style="dim")
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            err().print()
            return
        if line in ("/exit", "/quit"):
            return
        if line:
            ask(line)


def _chat(api, model, messages, params, stream, printer, as_json, schema) -> str:
    body = {"model": model, "messages": messages, **params}
    if stream:
        content = []
        for chunk in api.stream("chat/completions", body):
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                printer.reasoning(reasoning_of(delta))
                if delta.get("content"):
                    content.append(delta["content"])
                    printer.answer(delta["content"])
        printer.end()
        return "".join(content)
    data = api.post_json("chat/completions", body)
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content, reasoning = msg.get("content") or "", reasoning_of(msg)
    if schema is not None:
        check_answer(content, schema)
    if as_json:
        print(json.dumps({"content": content, "reasoning": reasoning or None,
                          "finish_reason": choice.get("finish_reason"), "usage": data.get("usage")}))
        return content
    printer.reasoning(reasoning)
    printer.answer(content.strip() if schema is None else content)
    printer.end()
    return content


def _complete(api, model, prompt, params, stream, printer, as_json) -> str:
    body = {"model": model, "prompt": prompt, **params}
    if stream:
        parts = []
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
        print(json.dumps({"content": text, "reasoning": None, "finish_reason": choice.get("finish_reason"),
                          "usage": data.get("usage")}))
    else:
        printer.answer(text)
        printer.end()
    return text


