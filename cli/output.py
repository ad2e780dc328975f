"""How the CLI talks to a person or a script: JSON, one-line errors, progress bars on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import msgspec
from tqdm import tqdm

__all__ = ["emit_json", "json_option", "progress_bar"]

F = TypeVar("F", bound=Callable[..., Any])

#: Below this many bytes a bar would only flicker.
_PROGRESS_MIN_BYTES = 8 << 20


def json_option(func: F) -> F:
    """The ``--json`` flag every command takes: machine-readable output on stdout."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
    )(func)


def _default(obj: Any) -> Any:
    # CIDs and paths print as their canonical strings.
    return str(obj)


def emit_json(value: Any) -> None:
    """Print ``value`` as one JSON document on stdout."""
    sys.stdout.buffer.write(msgspec.json.encode(value, enc_hook=_default) + b"\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A byte-counting progress bar on stderr, shown only for long work on a terminal."""
    if total < _PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield lambda _n: None
        return
    with tqdm(
        total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
        leave=False,
    ) as bar:
        yield bar.update
