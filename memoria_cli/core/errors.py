"""The documented error tree: every failure a user can cause or fix ends here, as one line and an exit code.

Exit codes (also in the README):
  1  unexpected internal error (a bug: rerun with --debug and report it)
  2  usage error (bad flag or argument; Typer's own code)
  3  bad input: profile, GPU description, file
  4  the plan does not fit the memory that is there
  5  a runtime (vLLM, LiteLLM) is missing or broken: run `memoria setup`
  6  preflight refused: port taken, another supervisor running, leftovers
  7  the stack failed to start or a worker went FATAL
  8  not running / nothing to act on
  9  the server answered with an error or could not be reached
"""

from __future__ import annotations


class MemoriaError(Exception):
    """A failure with a message for people, a hint saying what to do, and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class InputError(MemoriaError):
    exit_code = 3


class PlanError(MemoriaError):
    exit_code = 4


class RuntimeMissing(MemoriaError):
    exit_code = 5


class PreflightError(MemoriaError):
    exit_code = 6


class StartError(MemoriaError):
    exit_code = 7


class NotRunning(MemoriaError):
    exit_code = 8


class ServerError(MemoriaError):
    exit_code = 9


class Interrupted(BaseException):
    """Ctrl-C, raised where the program is by app.main's SIGINT handler. Not KeyboardInterrupt: click turns
    that into exit 1 after "Aborted!", and the interpreter then waits for every request thread. Exit 130."""


class Terminated(Interrupted):
    """SIGTERM, raised the same way so that `finally` blocks and clean-ups run as for Ctrl-C. Exit 143."""


def error_for(exit_code: int, message: str, hint: str | None = None) -> MemoriaError:
    """The error of that documented exit code (a failure passed back as data, from the detached supervisor)."""
    for cls in (InputError, PlanError, RuntimeMissing, PreflightError, StartError, NotRunning, ServerError):
        if cls.exit_code == exit_code:
            return cls(message, hint)
    return MemoriaError(message, hint)
