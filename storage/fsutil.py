"""Small filesystem helpers shared by the CLI-facing storage operations."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import msgspec
from dre.protocol.errors import DreError

__all__ = ["read_json_file", "write_atomically"]

T = TypeVar("T")


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary sibling renamed into place: whole or not at all."""
    tmp = path.with_name(f".{path.name}.dre-tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json_file(path: Path, kind: type[T], *, max_bytes: int, default: T | None = None) -> T:
    """Decode the JSON file at ``path`` as ``kind`` (a msgspec Struct), bounded in size.

    A missing file gives ``default`` when one is given. Every failure is one DreError line that
    names the file: unreadable, too large, not JSON, or not the expected shape.
    """
    try:
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError:
        if default is not None:
            return default
        raise DreError(f"{path} does not exist") from None
    except OSError as exc:
        raise DreError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise DreError(f"{path} is larger than {max_bytes} bytes")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise DreError(f"invalid {path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DreError(f"{path} is not valid JSON: {exc}") from None
