"""How a command fails: one line on stderr (and a hint) and an exit code (for the client
commands, one from EXIT_HELP)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from .output import err

if TYPE_CHECKING:
    from ..client import ClientError

EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_CONFLICT = 6
EXIT_LOCKED = 7

EXIT_HELP = (
    "Exit codes: 0 success; 1 other error (server error, unexpected answer, not confirmed); "
    "2 invalid input (options, files, no API key, HTTP 400); 3 server unreachable; "
    "4 bad API key or not allowed (HTTP 401/403); 5 not found (HTTP 404); "
    "6 already exists (HTTP 409); 7 organization locked, over its plan (HTTP 402)."
)


class Problem(Exception):
    """A failure found on this side, before or after talking to the server."""

    def __init__(self, message: str, code: int = EXIT_INVALID, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


def fail(message: str, code: int = EXIT_ERROR, hint: str | None = None) -> typer.Exit:
    """Print ``error: MESSAGE`` (and the hint) on stderr; raise the answer to end with ``code``.

    Every command fails through here, the client commands and those that open the database
    alike. The message is printed as written: never read as markup, never wrapped.
    """
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    if hint:
        err.print(f"[dim]hint:[/dim] {escape(hint)}", soft_wrap=True)
    return typer.Exit(code)


def exit_code(error: ClientError) -> int:
    if error.unreachable:
        return EXIT_UNREACHABLE
    if error.status is None:
        return EXIT_ERROR  # an answer of a shape the API does not give
    return {
        400: EXIT_INVALID,
        401: EXIT_AUTH,
        402: EXIT_LOCKED,
        403: EXIT_AUTH,
        404: EXIT_NOT_FOUND,
        409: EXIT_CONFLICT,
        413: EXIT_INVALID,
        422: EXIT_INVALID,
    }.get(error.status, EXIT_ERROR)


def _hint(error: ClientError) -> str | None:
    if error.unreachable:
        return "is the server running? Choose it with --server or OTAMETER_SERVER."
    if error.status == 401:
        return "check the API key (--apikey, OTAMETER_APIKEY or the config file)."
    if error.status == 402:
        return "the organization is over its plan; `otameter usage --org ORG` shows its usage."
    if error.status == 404 and error.message.startswith("App "):
        return (
            "create the app with `otameter app create APP_ID --org ORG_ID` "
            "(`otameter org list` shows your organizations, `otameter app list` your apps)."
        )
    if error.status == 404 and error.message.startswith("Organization "):
        return "`otameter org list` shows the organizations this API key can see."
    if error.status == 409 and "already exists" in error.message:
        return None
    if error.status == 409:
        return "a version is uploaded once per app: choose a new --version."
    return None


@contextmanager
def reporting() -> Iterator[None]:
    """Every failure ends here: one line on stderr and an exit code from EXIT_HELP."""
    from ..client import ClientError

    try:
        yield
    except Problem as problem:
        raise fail(problem.message, problem.code, problem.hint) from None
    except ClientError as error:
        raise fail(str(error), exit_code(error), _hint(error)) from None


ForceOption = Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation.")]


def confirm_or_stop(question: str, nothing_done: str) -> None:
    """Ask ``question`` on stderr; anything but yes (no terminal to answer included) stops the
    command with exit code 1, saying ``nothing_done``."""
    try:
        confirmed = typer.confirm(question, default=False, err=True)
    except typer.Abort:
        confirmed = False
    if not confirmed:
        raise Problem(f"not confirmed: {nothing_done}", EXIT_ERROR, hint="use --force in scripts")
