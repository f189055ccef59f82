"""Line breaking as ruff format does it, for the few generated lines that can grow past the line length."""

from __future__ import annotations

LINE_LENGTH = 120  # ruff's line-length for generated/ (pyproject.toml)


def broken(call: str, indent: int) -> str:
    """A one-argument call (or an assignment of one) broken as ruff format breaks it when too long: the
    outermost parentheses first, each argument on its own line; lines are relative to ``indent``."""
    if indent + len(call.split("\n")[0]) <= LINE_LENGTH or "(" not in call or not call.endswith(")"):
        return call
    head, _, inner = call.partition("(")
    return f"{head}(\n    " + broken(inner[:-1], indent + 4).replace("\n", "\n    ") + "\n)"


def def_line(name: str, args: str, returns: str, indent: int) -> str:
    """A ``def`` line, or ruff's break of it: the parameters on one line of their own."""
    line = f"def {name}({args}) -> {returns}:"
    return line if indent + len(line) <= LINE_LENGTH else f"def {name}(\n    {args}\n) -> {returns}:"
