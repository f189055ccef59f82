"""Errors that reach the user as one line: ``path:line:col: field: message``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pos:
    """A place in a spec file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SpecError(Exception):
    """Bad input. The CLI prints ``str(error)`` and exits 2; nothing is written."""

    def __init__(self, pos: Pos | str, field: str, message: str) -> None:
        self.pos = pos
        self.field = field
        self.message = message
        where = str(pos)
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(_one_line(text))


class KindError(ValueError):
    """Raised by a block kind while resolving; the resolver adds the file position.

    ``field`` is relative to the kind's own mapping in the spec (``"heads"``).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def unknown(what: str, value: object, valid: list[str]) -> str:
    """``unknown kind 'mamba'; did you mean …? (valid here: …)``: a name the catalogue does not hold, and
    those it does."""
    import difflib

    name = str(value)[:60]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {what} '{name}'{hint} (valid here: {', '.join(valid)})"


MAX_LENGTH = 1000  # an error echoes what the user wrote; a line is not the place for a megabyte of it


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 3] + "..."
