"""Shared CLI plumbing: consoles, exit codes, and turning StableNew errors into one clean line."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from stablenew.errors import (
    ConfigError,
    DuplicateJob,
    InvalidRecords,
    JobNotFound,
    JobNotQueued,
    OrchestrationError,
    PackError,
    PrefectUnavailable,
    StableNewError,
    WebUIError,
)
from stablenew.ordering import group_by_model, model_switches
from stablenew.records import NormalizedJobRecord

# Documented in docs/cli.md; scripts rely on them.
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran but jobs failed, or an unexpected error
EXIT_BAD_INPUT = 2  # invalid pack, settings, arguments, unknown job
EXIT_UNAVAILABLE = 3  # Prefect server or WebUI not reachable
EXIT_INTERRUPTED = 130  # Ctrl-C, after saying and doing what happens to the queued jobs

P = ParamSpec("P")
R = TypeVar("R")

KEEP_ORDER_HELP = "Queue jobs in pack order instead of grouping them by checkpoint."

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout, nothing else."""
    typer.echo(json.dumps(data, default=str, ensure_ascii=False))


def _code_for(error: StableNewError) -> int:
    bad_input = PackError | ConfigError | JobNotFound | DuplicateJob | JobNotQueued | InvalidRecords
    if isinstance(error, bad_input):
        return EXIT_BAD_INPUT
    if isinstance(error, PrefectUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(error, WebUIError) and error.retryable:
        return EXIT_UNAVAILABLE
    if isinstance(error, OrchestrationError):
        return EXIT_FAILED
    return EXIT_FAILED


@contextmanager
def handle_errors() -> Iterator[None]:
    """Known errors become one line and an exit code; unexpected ones too, unless debugging.

    ``STABLENEW_DEBUG=1`` re-raises so tests and bug reports see the traceback.
    """
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        # Ctrl-C outside what a command handles itself (a submission rolls itself back).
        err_console.print("[yellow]Interrupted[/].")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except PackError as e:
        for issue in e.issues:
            err_console.print(str(issue), highlight=False, markup=False, soft_wrap=True)
        err_console.print(f"[bold red]error:[/] {len(e.issues)} problem(s); nothing was queued.")
        raise typer.Exit(EXIT_BAD_INPUT) from e
    except StableNewError as e:
        if os.environ.get("STABLENEW_DEBUG"):
            raise
        fail(str(e), _code_for(e))
    except Exception as e:
        if os.environ.get("STABLENEW_DEBUG"):
            raise
        fail(f"unexpected {type(e).__name__}: {e}", EXIT_FAILED)


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of :func:`handle_errors` for command functions."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with handle_errors():
            return fn(*args, **kwargs)

    return wrapper


def order_note(records: Sequence[NormalizedJobRecord], keep_order: bool) -> str:
    """ " Grouped by checkpoint: N model switches instead of M." when grouping saved any."""
    if keep_order:
        return ""
    before = model_switches(records)
    after = model_switches([records[i] for i in group_by_model(records)])
    return (
        f" Grouped by checkpoint: {after} model switch(es) instead of {before}."
        if after < before
        else ""
    )
