"""What every command shares: error reporting, JSON output, the stderr console, option parsing (``_parse``)."""

from __future__ import annotations

import functools
import json
import os
import sys
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from typer.models import OptionInfo

from reidcompress._parse import name_options, parse_floats, parse_ints, parse_size
from reidcompress.errors import ExportError, InputError, ReidCompressError

__all__ = ["handle_errors", "emit_json", "console", "out_console", "parse_size", "parse_floats", "parse_ints"]

F = TypeVar("F", bound=Callable[..., Any])

# Progress, logs and tables for people go to stderr unless a command prints its result table;
# with --json, stdout carries exactly one JSON object.
console = Console(stderr=True)
# Piped to a file or a CI log, rich would cut tables to 80 columns ("mod…", "86.…"); COLUMNS still wins.
out_console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)


# Bad input, a missing backend, a failed build: 2. An export that ran but does not reproduce its
# reference (a broken graph, an INT8/FP16 model outside its cosine gate): 1, as a failed check.
EXIT_CODES: dict[type[ReidCompressError], int] = {ExportError: 1}


def exit_code(error: ReidCompressError) -> int:
    return next((code for cls, code in EXIT_CODES.items() if isinstance(error, cls)), 2)


@typing.overload
def handle_errors(fn: F) -> F: ...
@typing.overload
def handle_errors(*, aliases: dict[str, str]) -> Callable[[F], F]: ...


def handle_errors(fn: F | None = None, *, aliases: dict[str, str] | None = None) -> Any:
    """Turn a ReidCompressError into one line on stderr, naming the command's options, and its exit code
    (EXIT_CODES, else 2). ``aliases`` names the library parameters a command spells otherwise
    (``parity_data`` -> ``--data``). With ``--json``, what the command finished before the error (the
    error's ``report``) is still printed, so a script learns which files were written."""
    if fn is None:
        return functools.partial(handle_errors, aliases=aliases)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ReidCompressError as e:
            message = name_options(str(e), {**command_options(fn), **(aliases or {})})
            if kwargs.get("json_out") and e.report is not None:
                emit_json({**e.report.to_dict(), "error": message})
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(exit_code(e)) from None

    return wrapper


def command_options(command: Callable[..., Any]) -> dict[str, str]:
    """A command function's options by parameter name, from its ``Annotated[..., typer.Option(...)]``
    hints: ``{"target_flops": "--target-flops", "out": "--out", "residual": "--residual"}``."""
    options = {}
    for name, hint in typing.get_type_hints(command, include_extras=True).items():
        for info in getattr(hint, "__metadata__", ()):
            if isinstance(info, OptionInfo):
                # In an Annotated hint, typer.Option's first argument (``default``) is a declaration too.
                decls = [info.default, *(info.param_decls or ())]
                long = [d.split("/")[0] for d in decls if isinstance(d, str) and d.startswith("--")]
                options[name] = long[0] if long else "--" + name.replace("_", "-")
    return options


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__fspath__"):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def set_threads(threads: int | None) -> None:
    """CPU threads for PyTorch (ONNX Runtime sessions take theirs per session)."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
