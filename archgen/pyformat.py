"""Line breaking as ruff format does it, for the few generated lines that can grow past the line length."""

from __future__ import annotations

LINE_LENGTH = 120  # ruff's line-length for generated/ (pyproject.toml)


def broken(call: str, indent: int) -> str:
    """A one-argument call (or an assignment of one) broken as ruff format breaks it when too long: the
    outermost parentheses first, each argument on its own line; lines are relative to ``indent``."""
    if indent + len(call.split("\n")[0]) <= LINE_LENGTH:
        return call
    if call.startswith("*[") and call.endswith("]") and " for " in call:  # a starred list comprehension
        element, _, loop = call[2:-1].rpartition(" for ")
        # ``a if c else b`` (a cycle's blocks): each operand on its own line, the keywords leading
        lines = "\n".join(broken(o, indent + 4) for o in _conditional(element))
        return "*[\n    " + lines.replace("\n", "\n    ") + f"\n    for {loop}\n]"
    if "(" not in call or not call.endswith(")"):
        return call
    head, _, inner = call.partition("(")
    return f"{head}(\n    " + broken(inner[:-1], indent + 4).replace("\n", "\n    ") + "\n)"


def def_line(name: str, args: str, returns: str, indent: int) -> str:
    """A ``def`` line, or ruff's break of it: the parameters on one line of their own."""
    line = f"def {name}({args}) -> {returns}:"
    if indent + len(line) <= LINE_LENGTH:
        return line
    if indent + 4 + len(args) <= LINE_LENGTH:
        return f"def {name}(\n    {args}\n) -> {returns}:"
    return f"def {name}(\n" + "".join(f"    {a},\n" for a in _top_level(args)) + f") -> {returns}:"


def _top_level(args: str) -> list[str]:
    """The comma-separated items of ``args`` outside brackets (``a: int, b: tuple[int, int]``)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(args):
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            items.append(args[start:i].strip())
            start = i + 1
    return [*items, args[start:].strip()]


def _conditional(expr: str) -> list[str]:
    """``a if c else b`` as ``["a", "if c", "else b"]`` (a chain of them likewise); ``[expr]`` for any other
    expression. Only keywords outside brackets count."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(expr):
        depth += (ch in "([{") - (ch in ")]}")
        if depth == 0 and i > start and (expr.startswith(" if ", i) or expr.startswith(" else ", i)):
            parts.append(expr[start:i])
            start = i + 1
    return [*parts, expr[start:]]
