"""The command line: commands registered in one place, one error boundary around all of them."""

from __future__ import annotations

import os
import signal
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


def _interrupted(signum: int, frame: object) -> None:
    from memoria_cli.core.errors import Interrupted, Terminated

    raise Terminated() if signum == signal.SIGTERM else Interrupted()


def main() -> None:
    """Run the app; domain errors become one line on stderr and their documented exit code."""
    from memoria_cli.cli.console import debug_enabled
    from memoria_cli.core.errors import Interrupted, MemoriaError, Terminated

    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 must not crash a message about it
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    prefix = f"memoria[{os.getpid()}]" if len(sys.argv) > 1 and sys.argv[1] == "_supervise" else "memoria"
    signal.signal(signal.SIGTERM, _interrupted)  # the supervisor installs its own handlers over these
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored
        signal.signal(signal.SIGINT, _interrupted)
    argv = sys.argv[1:]
    if os.environ.get("_MEMORIA_COMPLETE"):  # a shell asks for completions (cli/completion.py)
        from typer._completion_classes import completion_init  # typer is pinned (0.29.1)

        completion_init()
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
    except (KeyboardInterrupt, Interrupted) as exc:
        # The clean-ups (partial files removed) ran while the exception unwound. Exit now: the threads of
        # requests still in flight (client.request_pool) must not be joined, they may take the whole --timeout.
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{prefix}: {what}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143 if isinstance(exc, Terminated) else 130)
    except Exception as exc:  # a bug: say so briefly, keep the traceback for --debug
        if debug_enabled():
            raise
        print(
            f"{prefix}: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)", file=sys.stderr
        )
        sys.exit(1)
