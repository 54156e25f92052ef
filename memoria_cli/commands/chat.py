"""`memoria chat`: ask the chat model; reasoning shown apart from the answer; structured output; a REPL."""

from __future__ import annotations

import sys
from typing import Any

import typer

from memoria_cli.cli.client_options import API_KEY, BASE_URL, MODEL, TIMEOUT


def register(app: typer.Typer) -> None:
    app.command(name="chat")(chat_cmd)


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


class Printer:
    """Answer on stdout; reasoning dimmed on stderr (or on stdout with --reasoning-only, or hidden)."""

    def __init__(self, show_reasoning: bool, reasoning_only: bool) -> None:
        from memoria_cli.cli.console import err

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
    option: list[str] = typer.Option(
        None, "--option", "-o", metavar="KEY VALUE", help="Any other parameter: -o key value (repeatable)."
    ),
    schema: str = typer.Option(
        None, "--schema", help="JSON Schema (file or inline JSON): structured output, validated before printing."
    ),
    no_stream: bool = typer.Option(False, "--no-stream", help="Wait for the whole answer (default off a terminal)."),
    no_reasoning: bool = typer.Option(False, "--no-reasoning", help="Hide the reasoning."),
    reasoning_only: bool = typer.Option(False, "--reasoning-only", help="Print only the reasoning, on stdout."),
    completion: bool = typer.Option(False, "--completion", help="Legacy /v1/completions with the text as prompt."),
    as_json: bool = typer.Option(False, "--json", help="Print {content, reasoning, finish_reason, usage} as JSON."),
    base_url: str = BASE_URL,
    api_key: str = API_KEY,
    timeout: float = TIMEOUT,
) -> None:
    """Ask the chat model. The answer goes to stdout; its reasoning, dimmed, to stderr.

    Examples: `memoria chat "What is the capital of France?"`,
    `memoria chat --schema person.json "Alice is 28 and an engineer"`, `memoria chat` (interactive).
    """
    from memoria_cli.cli.client_options import connect
    from memoria_cli.client.chat import chat_once, complete_once, load_schema, parse_options
    from memoria_cli.core.errors import InputError

    interactive = question is None and sys.stdin.isatty()
    if question is None and not interactive:
        question = sys.stdin.read().strip()
        if not question:
            raise InputError("nothing to ask: stdin was empty")
    params: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "stop": stop or None,
    }
    params = {k: v for k, v in params.items() if v is not None} | parse_options(option)
    the_schema = load_schema(schema) if schema else None
    if the_schema is not None:
        params["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": the_schema, "strict": True},
        }
    api, model = connect("chat", model, base_url, api_key, timeout)
    stream = not no_stream and not as_json and the_schema is None and sys.stdout.isatty()
    printer = Printer(show_reasoning=not no_reasoning, reasoning_only=reasoning_only)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def ask(text: str) -> str:
        if completion:
            return complete_once(api, model, text, params, stream, printer, as_json)
        history.append({"role": "user", "content": text})
        answer = chat_once(api, model, history, params, stream, printer, as_json, the_schema)
        history.append({"role": "assistant", "content": answer})  # reasoning is not sent back
        return answer

    if not interactive:
        ask(question)
        return
    from memoria_cli.cli.console import err

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
