"""Input geometry: an image size is a height and a width.

A spec, an option or a call may name a square as one integer (``224``); everywhere inside, a size is
``Size = (H, W)``, and it prints as ``224`` when square and ``224x320`` (H x W) otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Size = tuple[int, int]  # (H, W)

_TEXT = re.compile(r"^\s*([0-9]+)\s*(?:[xX]\s*([0-9]+)\s*)?$")


def size_of(size: int | Sequence[int]) -> Size:
    """``224`` -> ``(224, 224)``; ``(224, 320)`` and ``[224, 320]`` -> ``(224, 320)``."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def size_text(size: int | Sequence[int]) -> str:
    """``224`` for a square, ``224x320`` (H x W) otherwise."""
    h, w = size_of(size)
    return str(h) if h == w else f"{h}x{w}"


def parse_size(text: str) -> Size | None:
    """``224`` or ``224x320`` (H x W) as a Size; None where the text is neither."""
    found = _TEXT.match(text)
    if found is None:
        return None
    h = int(found[1])
    return (h, int(found[2]) if found[2] is not None else h)


def size_code(size: Size) -> str:
    """The size as Python source: ``224`` for a square (an int argument means a square), else ``(224, 320)``."""
    h, w = size
    return str(h) if h == w else f"({h}, {w})"


def size_value(size: int | Sequence[int]) -> int | list[int]:
    """The size as a spec or JSON writes it: ``224`` for a square, else ``[224, 320]``."""
    h, w = size_of(size)
    return h if h == w else [h, w]
