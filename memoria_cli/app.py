"""The command line: commands registered in one place, one error boundary around all of them."""

from __future__ import annotations

import os
import sys

import typer

from memoria_cli.commands import register

app = typer.Typer(
    name="memoria",
    help="One machine's GPUs as one private, OpenAI-compatible endpoint (vLLM workers behind LiteLLM).\n\n"
    "Start with `memoria plan`, then `memoria up -d`; `memoria status` and `memoria down` from anywhere.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # never print locals: they can hold keys
    rich_markup_mode=None,  # plain help: typer's rich help imports markdown-it, pygments, emoji: ~50 ms
    context_settings={"help_option_names": ["-h", "--help"]},
)
register(app)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks (also MEMORIA_DEBUG=1)."),
) -> None:
    if debug:
        os.environ["MEMORIA_DEBUG"] = "1"


def main() -> None:
    """Run the app; domain errors become one line on stderr and their documented exit code."""
    from memoria_cli.console import debug_enabled
    from memoria_cli.errors import MemoriaError

    prefix = f"memoria[{os.getpid()}]" if len(sys.argv) > 1 and sys.argv[1] == "_supervise" else "memoria"
    argv = sys.argv[1:]
    if argv[:1] == ["chat"]:
        from memoria_cli.commands.chat import join_option_pairs

        argv = join_option_pairs(argv)
    try:
        app(args=argv, standalone_mode=True, prog_name="memoria")
    except MemoriaError as exc:
        if debug_enabled():
            raise
        print(f"{prefix}: error: {exc.line()}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug: say so briefly, keep the traceback for --debug
        if debug_enabled():
            raise
        print(f"{prefix}: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
              file=sys.stderr)
        sys.exit(1)
